"""What the pages read, each query scoped to the signed-in account."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from imagesync.catalog.models import Product, Variant
from imagesync.sync.models import Image, SyncJobProduct
from imagesync.sync.schemas import ProductResult


@dataclass(frozen=True)
class ProductRow:
    item_number: str
    name: str | None
    images: int
    variants: int
    last_status: str | None
    last_at: datetime | None


@dataclass(frozen=True)
class LastSync:
    job_id: str
    status: str
    finished_at: datetime | None
    result: ProductResult | None


async def product_rows(
    session: AsyncSession, account_id: int, *, search: str, offset: int, limit: int
) -> tuple[list[ProductRow], int]:
    """A page of the account's products by item number, with counts and the last sync;
    `search` matches the item number or the name, in any case."""
    where = [Product.account_id == account_id]
    if search:
        pattern = f"%{search.lower()}%"
        where.append(
            or_(
                func.lower(Product.item_number).like(pattern),
                func.lower(Product.name).like(pattern),
            )
        )
    total = await session.scalar(select(func.count()).select_from(Product).where(*where)) or 0
    images = (
        select(func.count(Image.id))
        .where(Image.product_id == Product.id)
        .correlate(Product)
        .scalar_subquery()
    )
    variants = (
        select(func.count(Variant.id))
        .where(Variant.product_id == Product.id)
        .correlate(Product)
        .scalar_subquery()
    )
    earlier = aliased(SyncJobProduct)
    last = (
        select(func.max(earlier.seq))
        .where(
            earlier.account_id == Product.account_id,
            earlier.item_number == Product.item_number,
        )
        .correlate(Product)
        .scalar_subquery()
    )
    stmt = (
        select(
            Product.item_number,
            Product.name,
            images,
            variants,
            SyncJobProduct.status,
            SyncJobProduct.finished_at,
        )
        .outerjoin(SyncJobProduct, SyncJobProduct.seq == last)
        .where(*where)
        .order_by(Product.item_number)
        .offset(offset)
        .limit(limit)
    )
    rows = [ProductRow(*row) for row in await session.execute(stmt)]
    return rows, int(total)


async def last_sync(session: AsyncSession, account_id: int, item_number: str) -> LastSync | None:
    """The product's latest sync, whatever its job's other products did."""
    entry = await session.scalar(
        select(SyncJobProduct)
        .where(SyncJobProduct.account_id == account_id, SyncJobProduct.item_number == item_number)
        .order_by(SyncJobProduct.seq.desc())
        .limit(1)
    )
    if entry is None:
        return None
    result = ProductResult.model_validate(entry.result) if entry.result else None
    return LastSync(entry.job_id, entry.status, entry.finished_at, result)
