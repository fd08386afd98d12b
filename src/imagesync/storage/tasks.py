"""The blob lifecycle's tasks: making renditions, and the periodic collector, sweep and
rendition backfill."""

from __future__ import annotations

from datetime import timedelta

from imagesync.queue import RENDITIONS, Attempt, Tasks
from imagesync.storage import collector, renditions
from imagesync.storage.context import Blobs


def _blobs(attempt: Attempt) -> Blobs:
    ctx: Blobs = attempt.resources["blobs"]
    return ctx


def _grace(attempt: Attempt) -> timedelta:
    return timedelta(days=attempt.resources["settings"].blob_grace_days)


async def render_blob(attempt: Attempt, blob_id: int) -> None:
    """Make one stored image's WebP renditions."""
    await renditions.render(_blobs(attempt), blob_id, attempt)


async def collect(attempt: Attempt) -> None:
    """Delete files no image has used for the grace period (hourly)."""
    await collector.collect(_blobs(attempt), grace=_grace(attempt))


async def sweep(attempt: Attempt) -> None:
    """Delete stored files no row knows, older than the grace period (daily)."""
    await collector.sweep(_blobs(attempt), older_than=_grace(attempt))


async def backfill_renditions(attempt: Attempt) -> None:
    """Queue renditions images lack (a width added to the settings since; hourly)."""
    await renditions.queue_missing(_blobs(attempt))


def register(tasks: Tasks) -> None:
    tasks.task(renditions.RENDER_BLOB, queue=RENDITIONS, priority=renditions.RENDITION_PRIORITY)(
        render_blob
    )
    tasks.periodic("maintenance.collect", "7 * * * *")(collect)
    tasks.periodic("maintenance.sweep", "37 3 * * *")(sweep)
    tasks.periodic("maintenance.backfill_renditions", "17 * * * *")(backfill_renditions)
