"""Products and their variants, upserted by item number and SKU. Functions take the
session first and only flush; the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.catalog import repository
from imagesync.catalog.models import (
    Account,
    Attribute,
    AttributeValue,
    Product,
    Variant,
    VariantAttribute,
)
from imagesync.catalog.schemas import (
    AttributeValueRead,
    Change,
    ChangeCounts,
    ProductSyncCounts,
    ProductSyncOutcome,
    ProductSyncRequest,
    ProductSyncResult,
    VariantRead,
    VariantSyncOutcome,
)
from imagesync.kit.db import utcnow
from imagesync.kit.errors import (
    NotFound,
    Problem,
    ValidationFailed,
    duplicate_problems,
)

log = structlog.get_logger(__name__)


def variant_read(variant: Variant) -> VariantRead:
    links = sorted(variant.attribute_links, key=lambda link: link.attribute_value.attribute.name)
    return VariantRead(
        sku=variant.sku,
        attributes={
            link.attribute_value.attribute.name: AttributeValueRead(
                value=link.attribute_value.value, code=link.attribute_value.code
            )
            for link in links
        },
        created_at=variant.created_at,
        updated_at=variant.updated_at,
    )


async def get_product(session: AsyncSession, account: Account, item_number: str) -> Product:
    product = await repository.get_product(session, account.id, item_number)
    if product is None:
        raise NotFound(f"No product with item number {item_number!r}")
    return product


async def list_products(
    session: AsyncSession, account: Account, *, offset: int, limit: int
) -> tuple[Sequence[Product], int]:
    return await repository.list_products(session, account.id, offset=offset, limit=limit)


async def product_ids(
    session: AsyncSession, account: Account, item_numbers: Sequence[str]
) -> list[int]:
    return await repository.get_product_ids(session, account.id, item_numbers)


class _AttributeResolver:
    """Finds or creates attribute values by (name, value) for one request."""

    def __init__(self, session: AsyncSession, account: Account, attributes: Sequence[Attribute]):
        self._session = session
        self._account = account
        self._attributes = {a.name: a for a in attributes}

    def resolve(self, name: str, value: str) -> tuple[Attribute, AttributeValue]:
        attribute = self._attributes.get(name)
        if attribute is None:
            attribute = Attribute(account_id=self._account.id, name=name, values=[])
            self._session.add(attribute)
            self._attributes[name] = attribute
        for existing in attribute.values:
            if existing.value == value:
                return attribute, existing
        # A value not defined yet is created without a code; /attributes/sync sets codes.
        created = AttributeValue(value=value)
        attribute.values.append(created)
        return attribute, created


def _attribute_map(variant: Variant) -> dict[str, str]:
    return {
        link.attribute_value.attribute.name: link.attribute_value.value
        for link in variant.attribute_links
    }


async def sync_products(
    session: AsyncSession, account: Account, request: ProductSyncRequest
) -> ProductSyncResult:
    """Upsert products by item number and variants by SKU; `delete: true` deletes.

    All or nothing: any problem fails the whole request and the caller rolls back.
    """
    products_in = request.products
    problems = duplicate_problems(
        (p.item_number, f"/products/{i}/item_number") for i, p in enumerate(products_in)
    )
    problems += duplicate_problems(
        (v.sku, f"/products/{i}/variants/{j}/sku")
        for i, p in enumerate(products_in)
        for j, v in enumerate(p.variants or [])
    )
    for i, p in enumerate(products_in):
        if p.delete and p.variants:
            problems.append(
                Problem(
                    detail="A product marked for deletion takes no variants",
                    pointer=f"/products/{i}/variants",
                )
            )
    if problems:
        raise ValidationFailed(problems=problems)

    products = {
        p.item_number: p
        for p in await repository.get_products(
            session, account.id, [p.item_number for p in products_in]
        )
    }
    all_skus = [v.sku for p in products_in for v in p.variants or []]
    owners = {
        v.sku: v.product.item_number
        for v in await repository.get_variants_by_sku(session, account.id, all_skus)
    }
    attribute_names = {n for p in products_in for v in p.variants or [] for n in v.attributes or {}}
    resolver = _AttributeResolver(
        session, account, await repository.list_attributes(session, account.id, attribute_names)
    )

    outcomes: list[ProductSyncOutcome] = []
    product_counts, variant_counts = ChangeCounts(), ChangeCounts()
    now = utcnow()
    for i, product_in in enumerate(products_in):
        product = products.get(product_in.item_number)
        variant_outcomes: list[VariantSyncOutcome] = []
        result: Change
        if product_in.delete:
            if product is None:
                result = "not_found"
            else:
                await session.delete(product)
                result = "deleted"
        else:
            changed = False
            if product is None:
                product = Product(
                    account_id=account.id,
                    item_number=product_in.item_number,
                    name=product_in.name,
                    variants=[],
                )
                session.add(product)
                result = "created"
            else:
                result = "unchanged"
                if "name" in product_in.model_fields_set and product.name != product_in.name:
                    product.name = product_in.name
                    changed = True
            by_sku = {v.sku: v for v in product.variants}
            for j, variant_in in enumerate(product_in.variants or []):
                owner = owners.get(variant_in.sku)
                if owner is not None and owner != product.item_number:
                    problems.append(
                        Problem(
                            detail=f"SKU {variant_in.sku!r} belongs to product {owner!r}; "
                            "SKUs cannot move between products",
                            pointer=f"/products/{i}/variants/{j}/sku",
                            code="sku_taken",
                            title="SKU belongs to another product",
                        )
                    )
                    continue
                variant = by_sku.get(variant_in.sku)
                vresult: Change
                if variant_in.delete:
                    if variant is None:
                        vresult = "not_found"
                    else:
                        product.variants.remove(variant)
                        vresult = "deleted"
                elif variant is None:
                    variant = Variant(account_id=account.id, sku=variant_in.sku, attribute_links=[])
                    _set_attributes(variant, variant_in.attributes or {}, resolver)
                    product.variants.append(variant)
                    vresult = "created"
                elif (
                    variant_in.attributes is not None
                    and _attribute_map(variant) != variant_in.attributes
                ):
                    _set_attributes(variant, variant_in.attributes, resolver)
                    variant.updated_at = now
                    vresult = "updated"
                else:
                    vresult = "unchanged"
                changed = changed or vresult in ("created", "updated", "deleted")
                setattr(variant_counts, vresult, getattr(variant_counts, vresult) + 1)
                variant_outcomes.append(VariantSyncOutcome(sku=variant_in.sku, result=vresult))
            if result == "unchanged" and changed:
                product.updated_at = now
                result = "updated"
        setattr(product_counts, result, getattr(product_counts, result) + 1)
        outcomes.append(
            ProductSyncOutcome(
                item_number=product_in.item_number, result=result, variants=variant_outcomes
            )
        )
    if problems:
        raise ValidationFailed(problems=problems)
    await session.flush()
    log.info(
        "catalog.products.synced",
        account=account.name,
        products=product_counts.model_dump(),
        variants=variant_counts.model_dump(),
    )
    return ProductSyncResult(
        products=outcomes,
        counts=ProductSyncCounts(products=product_counts, variants=variant_counts),
    )


def _set_attributes(
    variant: Variant, attributes: dict[str, str], resolver: _AttributeResolver
) -> None:
    """Make the variant's attribute values exactly `attributes`, editing links in place
    (a link is keyed by variant and attribute, so it is updated rather than replaced)."""
    links = {link.attribute_value.attribute.name: link for link in variant.attribute_links}
    for name, stale in links.items():
        if name not in attributes:
            variant.attribute_links.remove(stale)
    for name, value in attributes.items():
        attribute, attribute_value = resolver.resolve(name, value)
        current = links.get(name)
        if current is None:
            variant.attribute_links.append(
                VariantAttribute(attribute=attribute, attribute_value=attribute_value)
            )
        elif current.attribute_value is not attribute_value:
            current.attribute_value = attribute_value
