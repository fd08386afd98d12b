from __future__ import annotations

from fastapi import APIRouter, Request

from imagesync.catalog import service
from imagesync.catalog.schemas import (
    AttributeList,
    AttributeSyncRequest,
    AttributeSyncResult,
    ProductPage,
    ProductRead,
    ProductSyncRequest,
    ProductSyncResult,
)
from imagesync.deps import AccountDep, SessionDep
from imagesync.kit.errors import ErrorResponse
from imagesync.kit.pagination import PageDep
from imagesync.sync import service as sync_service

ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorResponse, "description": "Missing, unknown or revoked token"},
    422: {"model": ErrorResponse, "description": "Invalid request; one error per problem"},
}

router = APIRouter(responses=ERRORS)


@router.post("/attributes/sync", tags=["attributes"])
async def sync_attributes(
    body: AttributeSyncRequest, session: SessionDep, account: AccountDep
) -> AttributeSyncResult:
    """Create or update attributes and their values' codes (image rules match on codes)."""
    result = await service.sync_attributes(session, account, body)
    await sync_service.relink_account(session, account)  # codes decide image attachments
    return result


@router.get("/attributes", tags=["attributes"])
async def list_attributes(session: SessionDep, account: AccountDep) -> AttributeList:
    """List the account's attributes with their values and codes."""
    return AttributeList(attributes=await service.list_attributes(session, account))


@router.post("/products/sync", tags=["products"])
async def sync_products(
    body: ProductSyncRequest, session: SessionDep, account: AccountDep
) -> ProductSyncResult:
    """Create, update or delete up to 100 products and their variants, by item number and SKU."""
    deleting = [p.item_number for p in body.products if p.delete]
    if deleting:  # their images go with them: the files' grace period starts now
        await sync_service.release_images(
            session, await service.product_ids(session, account, deleting)
        )
    result = await service.sync_products(session, account, body)
    changed = [p.item_number for p in result.products if p.result in ("created", "updated")]
    await sync_service.relink_products(
        session, await service.product_ids(session, account, changed)
    )
    return result


@router.get("/products", tags=["products"])
async def list_products(
    request: Request, session: SessionDep, account: AccountDep, page: PageDep
) -> ProductPage:
    """List products by item number, a page at a time, with their images."""
    products, total = await service.list_products(
        session, account, offset=page.offset, limit=page.limit
    )
    images = await sync_service.read_images(
        session, [p.id for p in products], str(request.base_url)
    )
    return ProductPage(
        products=[service.product_read(p, images.get(p.id, [])) for p in products],
        meta=page.meta(total),
    )


@router.get(
    "/products/{item_number:path}",
    tags=["products"],
    responses={404: {"model": ErrorResponse, "description": "No such product"}},
)
async def get_product(
    item_number: str, request: Request, session: SessionDep, account: AccountDep
) -> ProductRead:
    """One product with its variants (each listing its images) and its images."""
    product = await service.get_product(session, account, item_number)
    images = await sync_service.read_images(session, [product.id], str(request.base_url))
    return service.product_read(product, images.get(product.id, []))
