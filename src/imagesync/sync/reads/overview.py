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
    session: AsyncSession,
    account_id: int,
    *,
    search: str,
    offset: int,
    limit: int,
    only: list[str] | None = None,
) -> tuple[list[ProductRow], int]:
    """A page of the account's products by item number, with counts and the last sync;
    `search` matches the item number or the name, in any case; `only`: these items."""
    where = [Product.account_id == account_id]
    if only is not None:
        where.append(Product.item_number.in_(only))
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
HAS_FAILURES = "has_failures"  # a filter: partially failed or failed


@dataclass(frozen=True)
class JobRow:
    id: str
    created_at: datetime
    status: str
    products: int
    failed: int
    finished_at: datetime | None
    items: list[str]  # its products' item numbers, in submission order

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return max(0.0, (self.finished_at - self.created_at).total_seconds())


def job_status_sql() -> Any:
    """A job's status from its products, in SQL (as `results.job_status` does)."""
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


def _jobs(account_id: int, since: datetime | None, search: str = "") -> Any:
    """The account's jobs with their derived status, product and failure counts;
    `search`: only those with a product whose item number contains it, in any case."""
    stmt = (
        select(
            SyncJob.id,
            SyncJob.created_at,
            job_status_sql().label("status"),
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
    if search:
        stmt = stmt.where(
            SyncJob.id.in_(
                select(SyncJobProduct.job_id).where(
                    SyncJobProduct.account_id == account_id,
                    func.lower(SyncJobProduct.item_number).like(f"%{search.lower()}%"),
                )
            )
        )
    return stmt.subquery()


async def job_counts(
    session: AsyncSession, account_id: int, *, since: datetime | None = None, search: str = ""
) -> dict[str, int]:
    """How many of the account's jobs (created after `since`, with a product matching
    `search`) have each status, and how many have failures (`HAS_FAILURES`)."""
    jobs = _jobs(account_id, since, search)
    rows = await session.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status))
    counts = {status: int(n) for status, n in rows}
    counts[HAS_FAILURES] = counts.get("failed", 0) + counts.get("partially_failed", 0)
    return counts


async def job_rows(
    session: AsyncSession,
    account_id: int,
    *,
    status: str | None,
    offset: int,
    limit: int,
    search: str = "",
) -> list[JobRow]:
    """A page of the account's jobs, newest first, of one status (or `HAS_FAILURES`) or
    all, each with its products' item numbers."""
    jobs = _jobs(account_id, None, search)
    stmt = select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id)
    if status == HAS_FAILURES:
        stmt = stmt.where(jobs.c.failed > 0)
    elif status:
        stmt = stmt.where(jobs.c.status == status)
    page = (await session.execute(stmt.offset(offset).limit(limit))).all()
    items: dict[str, list[str]] = {row.id: [] for row in page}
    if items:
        for job_id, item_number in await session.execute(
            select(SyncJobProduct.job_id, SyncJobProduct.item_number)
            .where(SyncJobProduct.job_id.in_(list(items)))
            .order_by(SyncJobProduct.seq)
        ):
            items[job_id].append(item_number)
    return [
        JobRow(
            row.id,
            row.created_at,
            row.status,
            int(row.products),
            int(row.failed or 0),
            row.finished_at if row.status not in ("queued", "running") else None,
            items[row.id],
        )
        for row in page
    ]


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
    hours: list[Hour]  # the last 24 hours, oldest first


@dataclass(frozen=True)
class Hour:
    start: datetime
    synced: int  # products whose sync ended succeeded
    downloaded: int  # files fetched
    failed: int  # products whose sync ended failed


def _hour_of(session: AsyncSession, column: Any) -> Any:
    """`column`'s hour as text, `YYYY-MM-DD HH` in UTC, on either database."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24")
    return func.strftime("%Y-%m-%d %H", column)


async def hours(session: AsyncSession, account_id: int, now: datetime) -> list[Hour]:
    """Per hour of the last 24: products synced and failed, files downloaded."""
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    ended = _hour_of(session, SyncJobProduct.finished_at)
    synced: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for hour, status, n in await session.execute(
        select(ended, SyncJobProduct.status, func.count())
        .where(
            SyncJobProduct.account_id == account_id,
            SyncJobProduct.finished_at >= first,
            SyncJobProduct.status.in_(("succeeded", "failed")),
        )
        .group_by(ended, SyncJobProduct.status)
    ):
        (synced if status == "succeeded" else failed)[hour] += int(n)
    fetched = _hour_of(session, Source.created_at)
    downloaded = Counter(
        {
            hour: int(n)
            for hour, n in await session.execute(
                select(fetched, func.count())
                .where(Source.account_id == account_id, Source.created_at >= first)
                .group_by(fetched)
            )
        }
    )
    found = []
    for n in range(24):
        start = first + timedelta(hours=n)
        key = start.strftime("%Y-%m-%d %H")
        found.append(Hour(start, synced[key], downloaded[key], failed[key]))
    return found


async def _failed_since(
    session: AsyncSession, account_id: int, since: datetime
) -> list[tuple[str, ProductResult]]:
    """The account's products whose sync failed since `since`, with their results."""
    return [
        (item_number, ProductResult.model_validate(result))
        for item_number, result in await session.execute(
            select(SyncJobProduct.item_number, SyncJobProduct.result).where(
                SyncJobProduct.account_id == account_id,
                SyncJobProduct.status == "failed",
                SyncJobProduct.finished_at > since,
            )
        )
        if result
    ]


async def items_failed_with(session: AsyncSession, account_id: int, code: str) -> list[str]:
    """The item numbers of the products whose sync failed with `code` (for the product
    or one of its images) in the last 24 hours: the dashboard's top codes, by product."""
    failed = await _failed_since(session, account_id, utcnow() - timedelta(days=1))
    return sorted({item for item, result in failed if code in result.failure_codes()})


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
    for _, result in await _failed_since(session, account_id, day_ago):
        codes.update(result.failure_codes())
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
        hours=await hours(session, account_id, now),
    )
