"""What waits, runs or failed, for `imagesync queue`: the products of sync jobs, the
renditions and the queue's own jobs (procrastinate's on PostgreSQL, with its stalled
jobs and live workers; the local runner's on SQLite)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from imagesync.kit.db import utcnow
from imagesync.queue.models import QueueJob
from imagesync.storage.models import Rendition
from imagesync.sync.models import SyncJob, SyncJobProduct


@dataclass
class QueueStatus:
    products: dict[str, int]  # by status: queued, running, failed (last day) ...
    oldest_queued_seconds: float | None
    failed_codes: dict[str, int]  # the last day's failures, by code (history)
    renditions: dict[str, int]  # by state
    # Products whose last finished sync failed, by code: what is failing now, however
    # old, and no longer once a later sync of the product succeeded.
    failing_codes: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, dict[str, int]] = field(default_factory=dict)  # queue -> status -> n
    stalled_jobs: int = 0
    workers: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "products": self.products,
            "oldest_queued_seconds": self.oldest_queued_seconds,
            "failing_codes": self.failing_codes,
            "failed_codes": self.failed_codes,
            "renditions": self.renditions,
            "jobs": self.jobs,
            "stalled_jobs": self.stalled_jobs,
            "workers": self.workers,
        }


async def queue_status(
    session: AsyncSession, *, procrastinate: bool, stalled_after: timedelta
) -> QueueStatus:
    now = utcnow()
    day_ago = now - timedelta(days=1)
    unfinished = SyncJobProduct.status.in_(("queued", "running"))
    rows = await session.execute(
        select(SyncJobProduct.status, func.count())
        .where(unfinished | (SyncJobProduct.finished_at > day_ago))
        .group_by(SyncJobProduct.status)
    )
    products = {status: int(n) for status, n in rows}
    oldest = await session.scalar(
        select(func.min(SyncJob.created_at))
        .join(SyncJobProduct, SyncJobProduct.job_id == SyncJob.id)
        .where(SyncJobProduct.status == "queued")
    )
    oldest_seconds = None if oldest is None else max(0.0, (now - oldest).total_seconds())
    code = SyncJobProduct.result["error"]["code"].as_string()
    failed_codes = {
        found or "unknown": int(n)
        for found, n in await session.execute(
            select(code, func.count())
            .where(SyncJobProduct.status == "failed", SyncJobProduct.finished_at > day_ago)
            .group_by(code)
        )
    }
    later = aliased(SyncJobProduct)
    failing_codes = {
        found or "unknown": int(n)
        for found, n in await session.execute(
            select(code, func.count())
            .where(
                SyncJobProduct.status == "failed",
                ~select(later.seq)
                .where(
                    later.account_id == SyncJobProduct.account_id,
                    later.item_number == SyncJobProduct.item_number,
                    later.seq > SyncJobProduct.seq,
                    later.status.in_(("succeeded", "failed")),
                )
                .exists(),
            )
            .group_by(code)
        )
    }
    renditions = {
        state: int(n)
        for state, n in await session.execute(
            select(Rendition.state, func.count()).group_by(Rendition.state)
        )
    }
    status = QueueStatus(products, oldest_seconds, failed_codes, renditions, failing_codes)
    if not procrastinate:
        for queue, job_status, n in await session.execute(
            select(QueueJob.queue, QueueJob.status, func.count())
            .group_by(QueueJob.queue, QueueJob.status)
            .order_by(QueueJob.queue, QueueJob.status)
        ):
            status.jobs.setdefault(queue, {})[job_status] = int(n)
    else:
        for queue, job_status, n in await session.execute(
            text(
                "SELECT queue_name, status::text, count(*) FROM procrastinate_jobs "
                "GROUP BY 1, 2 ORDER BY 1, 2"
            )
        ):
            status.jobs.setdefault(queue, {})[job_status] = int(n)
        silent = {"silent": stalled_after.total_seconds()}
        status.stalled_jobs = int(
            await session.scalar(
                text(
                    "SELECT count(*) FROM procrastinate_jobs j LEFT JOIN procrastinate_workers w "
                    "ON w.id = j.worker_id WHERE j.status = 'doing' AND (w.id IS NULL OR "
                    "w.last_heartbeat < now() - make_interval(secs => :silent))"
                ),
                silent,
            )
            or 0
        )
        status.workers = int(
            await session.scalar(
                text(
                    "SELECT count(*) FROM procrastinate_workers "
                    "WHERE last_heartbeat >= now() - make_interval(secs => :silent)"
                ),
                silent,
            )
            or 0
        )
    return status
