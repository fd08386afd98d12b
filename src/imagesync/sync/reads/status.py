"""What waits, runs or failed, for `imagesync queue` and `/metrics`: the products of sync
jobs, the renditions and the queue's own jobs (procrastinate's on PostgreSQL, with its
stalled jobs and live workers; the local runner's on SQLite)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from imagesync.kit.db import utcnow
from imagesync.queue.models import QueueJob
from imagesync.storage.models import Rendition
from imagesync.sync.models import UNFINISHED, SyncJob, SyncJobProduct
from imagesync.sync.reads.overview import job_status_sql


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
    later = aliased(SyncJobProduct)
    failing_codes = {
        found or "unknown": int(n)
        for found, n in await session.execute(
            select(_CODE, func.count())
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
            .group_by(_CODE)
        )
    }
    renditions = {
        state: int(n)
        for state, n in await session.execute(
            select(Rendition.state, func.count()).group_by(Rendition.state)
        )
    }
    status = QueueStatus(
        products,
        await oldest_queued_seconds(session, now),
        await failed_codes(session, since=day_ago),
        renditions,
        failing_codes,
    )
    status.jobs = await queue_jobs(session, procrastinate=procrastinate)
    if procrastinate:
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


_CODE = SyncJobProduct.result["error"]["code"].as_string()


async def oldest_queued_seconds(session: AsyncSession, now: datetime) -> float | None:
    """How long the job of the oldest product still queued has waited."""
    oldest = await session.scalar(
        select(func.min(SyncJob.created_at))
        .join(SyncJobProduct, SyncJobProduct.job_id == SyncJob.id)
        .where(SyncJobProduct.status == "queued")
    )
    return None if oldest is None else max(0.0, (now - oldest).total_seconds())


async def failed_codes(session: AsyncSession, *, since: datetime) -> dict[str, int]:
    """Products that ended `failed` since then, by their error's code."""
    rows = await session.execute(
        select(_CODE, func.count())
        .where(SyncJobProduct.status == "failed", SyncJobProduct.finished_at > since)
        .group_by(_CODE)
    )
    return {found or "unknown": int(n) for found, n in rows}


async def queue_jobs(session: AsyncSession, *, procrastinate: bool) -> dict[str, dict[str, int]]:
    """The queue's own jobs, by queue and status (procrastinate's, or the local runner's)."""
    jobs: dict[str, dict[str, int]] = {}
    if procrastinate:
        rows: Any = await session.execute(
            text(
                "SELECT queue_name, status::text, count(*) FROM procrastinate_jobs "
                "GROUP BY 1, 2 ORDER BY 1, 2"
            )
        )
    else:
        rows = await session.execute(
            select(QueueJob.queue, QueueJob.status, func.count())
            .group_by(QueueJob.queue, QueueJob.status)
            .order_by(QueueJob.queue, QueueJob.status)
        )
    for queue, job_status, n in rows:
        jobs.setdefault(queue, {})[job_status] = int(n)
    return jobs


@dataclass
class ClusterState:
    """What `/metrics` reads of the whole deployment, cheaply (each read by an index):
    the same whichever process answers."""

    waiting: dict[str, int]  # products queued, running
    oldest_queued_seconds: float | None
    ended_day: dict[str, int]  # products ended in the last 24 hours, by status
    failed_day: dict[str, int]  # ... that failed, by code
    jobs_day: dict[str, int]  # jobs recorded in the last 24 hours, by status
    renditions_pending: int
    queue_jobs: dict[str, dict[str, int]]


async def cluster_state(session: AsyncSession, *, procrastinate: bool) -> ClusterState:
    now = utcnow()
    day_ago = now - timedelta(days=1)
    waiting = {
        status: int(n)
        for status, n in await session.execute(
            select(SyncJobProduct.status, func.count())
            .where(UNFINISHED)
            .group_by(SyncJobProduct.status)
        )
    }
    ended = {
        status: int(n)
        for status, n in await session.execute(
            select(SyncJobProduct.status, func.count())
            .where(SyncJobProduct.finished_at > day_ago)
            .group_by(SyncJobProduct.status)
        )
    }
    jobs = (
        select(job_status_sql().label("status"))
        .select_from(SyncJob)
        .join(SyncJobProduct, SyncJobProduct.job_id == SyncJob.id)
        .where(SyncJob.created_at > day_ago)
        .group_by(SyncJob.id)
        .subquery()
    )
    jobs_day = {
        status: int(n)
        for status, n in await session.execute(
            select(jobs.c.status, func.count()).group_by(jobs.c.status)
        )
    }
    pending = await session.scalar(
        select(func.count()).select_from(Rendition).where(Rendition.state == "pending")
    )
    return ClusterState(
        waiting=waiting,
        oldest_queued_seconds=await oldest_queued_seconds(session, now),
        ended_day=ended,
        failed_day=await failed_codes(session, since=day_ago),
        jobs_day=jobs_day,
        renditions_pending=int(pending or 0),
        queue_jobs=await queue_jobs(session, procrastinate=procrastinate),
    )
