"""Queue entry points of the blob lifecycle, for `imagesync worker` (procrastinate): making
renditions, and the periodic collector, sweep and rendition backfill. The embedded
runners in `serve` call the same functions."""

from __future__ import annotations

from datetime import timedelta

import procrastinate
from procrastinate import JobContext

from imagesync.queue import RENDITIONS
from imagesync.queue.procrastinate import Backoff, periodic, setting
from imagesync.storage import collector, renditions
from imagesync.storage.context import Blobs


def blobs_context(context: JobContext) -> Blobs:
    ctx: Blobs = context.additional_context["blobs"]
    return ctx


async def render_blob(context: JobContext, blob_id: int) -> None:
    """Make one stored image's WebP renditions."""
    ctx = blobs_context(context)
    final = context.job.attempts + 1 >= ctx.max_attempts
    await renditions.render_queued(ctx, blob_id, final_attempt=final)


async def collect(context: JobContext, timestamp: int) -> None:  # noqa: ARG001
    """Delete files no image has used for the grace period (hourly)."""
    grace = timedelta(days=setting(context, "blob_grace_days"))
    await collector.collect(blobs_context(context), grace=grace)


async def sweep(context: JobContext, timestamp: int) -> None:  # noqa: ARG001
    """Delete stored files no row knows, older than the grace period (daily)."""
    grace = timedelta(days=setting(context, "blob_grace_days"))
    await collector.sweep(blobs_context(context), older_than=grace)


async def backfill_renditions(context: JobContext, timestamp: int) -> None:  # noqa: ARG001
    """Queue renditions images lack (a width added to the settings since; hourly)."""
    await renditions.queue_missing(blobs_context(context))


def register(app: procrastinate.App) -> None:
    app.task(name=renditions.RENDER_BLOB, queue=RENDITIONS, pass_context=True, retry=Backoff())(
        render_blob
    )
    periodic(app, "7 * * * *", collect)
    periodic(app, "37 3 * * *", sweep)
    periodic(app, "17 * * * *", backfill_renditions)
