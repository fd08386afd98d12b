"""Queue entry points of image sync, for `imagesync worker` (procrastinate). Each opens
its own sessions; the embedded runners in `serve` call the same service functions.

Retries: a product's runs are counted on its job entry (`service.record_crash` ends it
`failed` after `IMAGESYNC_TASK_MAX_ATTEMPTS`), a rendition's by procrastinate's job;
neither task raises on its final attempt, so nothing is retried forever.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import procrastinate
import structlog
from procrastinate import JobContext, RetryDecision
from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy

from imagesync.queue import MAINTENANCE, RENDITIONS, SYNC
from imagesync.sync import collector, renditions, service
from imagesync.sync.service import SyncContext

log = structlog.get_logger(__name__)


class Backoff(BaseRetryStrategy):
    """2, 4, 8 ... seconds, at most 5 minutes; a product held by an API process's inline
    apply is looked at again a second later."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, service.ProductBusy):
            return RetryDecision(retry_in={"seconds": 1})
        return RetryDecision(retry_in={"seconds": min(2 ** (job.attempts + 1), 300)})


def sync_context(context: JobContext) -> SyncContext:
    ctx: SyncContext = context.additional_context["sync"]
    return ctx


def setting(context: JobContext, name: str) -> Any:
    return context.additional_context["settings"][name]


async def run_product(context: JobContext, seq: int) -> None:
    """Download what one product of a sync job needs, then apply it."""
    await service.run_queued(sync_context(context), seq)


async def render_blob(context: JobContext, blob_id: int) -> None:
    """Make one stored image's WebP renditions."""
    ctx = sync_context(context)
    final = context.job.attempts + 1 >= ctx.max_attempts
    await renditions.render_queued(ctx, blob_id, final_attempt=final)


async def collect(context: JobContext, timestamp: int) -> None:  # noqa: ARG001
    """Delete files no image has used for the grace period (hourly)."""
    ctx = sync_context(context)
    grace = timedelta(days=setting(context, "blob_grace_days"))
    await collector.collect(ctx.sessionmaker, ctx.store, grace=grace)


async def sweep(context: JobContext, timestamp: int) -> None:  # noqa: ARG001
    """Delete stored files no row knows, older than the grace period (daily)."""
    ctx = sync_context(context)
    grace = timedelta(days=setting(context, "blob_grace_days"))
    await collector.sweep(ctx.sessionmaker, ctx.store, older_than=grace)


async def backfill_renditions(context: JobContext, timestamp: int) -> None:  # noqa: ARG001
    """Queue renditions images lack (a width added to the settings since; hourly)."""
    await renditions.queue_missing(sync_context(context))


async def retry_stalled(context: JobContext, timestamp: int) -> None:  # noqa: ARG001
    """Run again the jobs of workers that stopped sending heartbeats (killed, frozen, cut
    off): every 10 s, for workers silent for 3 heartbeats."""
    manager = context.app.job_manager
    silent = setting(context, "stalled_worker_seconds")
    for job in await manager.get_stalled_jobs(seconds_since_heartbeat=silent):
        log.warning("queue.job.stalled", job=job.id, task=job.task_name, worker=job.worker_id)
        await manager.retry_job(job)


def register(app: procrastinate.App) -> None:
    """Add image sync's tasks to a procrastinate app. Periodic work: procrastinate defers
    each tick once for the whole cluster, so exactly one worker runs it; the queueing
    lock keeps ticks from piling up behind a slow run."""
    app.task(name=service.RUN_PRODUCT, queue=SYNC, pass_context=True, retry=Backoff())(run_product)
    app.task(name=service.RENDER_BLOB, queue=RENDITIONS, pass_context=True, retry=Backoff())(
        render_blob
    )
    for cron, task in (
        ("7 * * * *", collect),
        ("37 3 * * *", sweep),
        ("17 * * * *", backfill_renditions),
        ("* * * * * */10", retry_stalled),
    ):
        name = f"maintenance.{task.__name__}"
        registered = app.task(name=name, queue=MAINTENANCE, pass_context=True, queueing_lock=name)
        app.periodic(cron=cron, periodic_id=name)(registered(task))
