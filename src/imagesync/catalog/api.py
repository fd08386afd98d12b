from __future__ import annotations

from fastapi import APIRouter

from imagesync.catalog import attributes as catalog_attributes
from imagesync.catalog import events
from imagesync.catalog import products as catalog_products
from imagesync.catalog.deps import AccountDep
from imagesync.catalog.schemas import (
    AttributeList,
    AttributeSyncRequest,
    AttributeSyncResult,
    ProductSyncRequest,
    ProductSyncResult,
)
from imagesync.kit.deps import ReadSessionDep, SessionDep
from imagesync.kit.errors import ErrorResponse
from imagesync.kit.routes import StrictRoute

ERRORS: dict[int | str, dict[str, object]] = {
    422: {"model": ErrorResponse, "description": "Invalid request; one error per problem"},
}

router = APIRouter(responses=ERRORS, route_class=StrictRoute)


@router.post("/attributes/sync", tags=["attributes"])
async def sync_attributes(
    body: AttributeSyncRequest, session: SessionDep, account: AccountDep
) -> AttributeSyncResult:
    """Create or update attributes and their values' codes (image rules match on codes)."""
    result = await catalog_attributes.sync_attributes(session, account, body)
    await events.codes_changed(session, account)  # codes decide image attachments
    return result


@router.get("/attributes", tags=["attributes"])
async def list_attributes(session: ReadSessionDep, account: AccountDep) -> AttributeList:
    """List the account's attributes with their values and codes."""
    return AttributeList(attributes=await catalog_attributes.list_attributes(session, account))


@router.post("/products/sync", tags=["products"])
async def sync_products(
    body: ProductSyncRequest, session: SessionDep, account: AccountDep
) -> ProductSyncResult:
    """Create, update or delete up to 100 products and their variants, by item number and SKU."""
    deleting = [p.item_number for p in body.products if p.delete]
    if deleting:  # what hangs on them goes with them
        await events.products_deleting(
            session, await catalog_products.product_ids(session, account, deleting)
        )
    result = await catalog_products.sync_products(session, account, body)
    changed = [p.item_number for p in result.products if p.result in ("created", "updated")]
    await events.products_changed(
        session, await catalog_products.product_ids(session, account, changed)
    )
    return result
