"""What the admin pages read of image sync and the catalog: the dashboard, the lists of
products and jobs, a product's last sync. Each query is scoped to the signed-in account."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from imagesync.catalog.models import Product, Variant
from imagesync.kit.db import utcnow
from imagesync.storage.models import Blob, Rendition
from imagesync.sync.models import Image, Source, SyncJob, SyncJobProduct
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


# -- jobs --------------------------------------------------------------------------------

JOB_STATUSES = ("queued", "running", "succeeded", "partially_failed", "failed")


@dataclass(frozen=True)
class JobRow:
    id: str
    created_at: datetime
    status: str
    products: int
    failed: int
    finished_at: datetime | None

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return max(0.0, (self.finished_at - self.created_at).total_seconds())


def _job_status() -> Any:
    """A job's status from its products, in SQL (as `sync.jobs.job_status` does)."""
    total = func.count(SyncJobProduct.seq)
    queued = func.sum(case((SyncJobProduct.status == "queued", 1), else_=0))
    unfinished = func.sum(case((SyncJobProduct.status.in_(("queued", "running")), 1), else_=0))
    failed = func.sum(case((SyncJobProduct.status == "failed", 1), else_=0))
    return case(
        (queued == total, "queued"),
        (unfinished > 0, "running"),
        (failed == 0, "succeeded"),
        (failed == total, "failed"),
        else_="partially_failed",
    )


def _jobs(account_id: int, since: datetime | None) -> Any:
    """The account's jobs with their derived status, product and failure counts."""
    stmt = (
        select(
            SyncJob.id,
            SyncJob.created_at,
            _job_status().label("status"),
            func.count(SyncJobProduct.seq).label("products"),
            func.sum(case((SyncJobProduct.status == "failed", 1), else_=0)).label("failed"),
            func.max(SyncJobProduct.finished_at).label("finished_at"),
        )
        .join(SyncJobProduct, SyncJobProduct.job_id == SyncJob.id)
        .where(SyncJob.account_id == account_id)
        .group_by(SyncJob.id, SyncJob.created_at)
    )
    if since is not None:
        stmt = stmt.where(SyncJob.created_at > since)
    return stmt.subquery()


async def job_counts(
    session: AsyncSession, account_id: int, *, since: datetime | None = None
) -> dict[str, int]:
    """How many of the account's jobs (created after `since`) have each status."""
    jobs = _jobs(account_id, since)
    rows = await session.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status))
    return {status: int(n) for status, n in rows}


async def job_rows(
    session: AsyncSession, account_id: int, *, status: str | None, offset: int, limit: int
) -> list[JobRow]:
    """A page of the account's jobs, newest first, of one status or all."""
    jobs = _jobs(account_id, None)
    stmt = select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id)
    if status:
        stmt = stmt.where(jobs.c.status == status)
    rows = []
    for row in await session.execute(stmt.offset(offset).limit(limit)):
        done = row.status not in ("queued", "running")
        rows.append(
            JobRow(
                row.id,
                row.created_at,
                row.status,
                int(row.products),
                int(row.failed or 0),
                row.finished_at if done else None,
            )
        )
    return rows


# -- the dashboard -------------------------------------------------------------------------


@dataclass(frozen=True)
class Dashboard:
    waiting: int  # products queued or running
    oldest_waiting_seconds: float | None
    jobs: dict[str, int]  # the last 24 h, by status
    downloads: int  # files fetched in the last 24 h
    bytes: int
    codes: list[tuple[str, int]]  # the last 24 h's failures, most common first
    renditions_pending: int


async def dashboard(session: AsyncSession, account_id: int) -> Dashboard:
    now = utcnow()
    day_ago = now - timedelta(days=1)
    mine = SyncJobProduct.account_id == account_id
    unfinished = SyncJobProduct.status.in_(("queued", "running"))
    waiting = await session.scalar(select(func.count()).where(mine, unfinished)) or 0
    oldest = await session.scalar(
        select(func.min(SyncJob.created_at))
        .join(SyncJobProduct, SyncJobProduct.job_id == SyncJob.id)
        .where(mine, unfinished)
    )
    jobs = await job_counts(session, account_id, since=day_ago)
    downloads, size = (
        await session.execute(
            select(func.count(Source.id), func.coalesce(func.sum(Blob.size), 0))
            .join(Blob, Blob.id == Source.blob_id)
            .where(Source.account_id == account_id, Source.created_at > day_ago)
        )
    ).one()
    codes: Counter[str] = Counter()
    for (result,) in await session.execute(
        select(SyncJobProduct.result).where(
            mine, SyncJobProduct.status == "failed", SyncJobProduct.finished_at > day_ago
        )
    ):
        if result:
            codes.update(ProductResult.model_validate(result).failure_codes())
    pending = await session.scalar(
        select(func.count(func.distinct(Rendition.id)))
        .join(Image, Image.blob_id == Rendition.blob_id)
        .join(Product, Product.id == Image.product_id)
        .where(Product.account_id == account_id, Rendition.state == "pending")
    )
    return Dashboard(
        waiting=int(waiting),
        oldest_waiting_seconds=None if oldest is None else (now - oldest).total_seconds(),
        jobs=jobs,
        downloads=int(downloads),
        bytes=int(size),
        codes=codes.most_common(10),
        renditions_pending=int(pending or 0),
    )
