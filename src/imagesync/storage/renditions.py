"""Making renditions: the queued task that follows a blob's first use.

Each (blob, width) is a `rendition` row, added pending in the transaction that starts
using the blob, together with one queued task per blob, so nothing is lost between
"used" and "queued". A runner claims all pending widths of one blob with a lease,
decodes the original once, stores each WebP and marks it ready, or failed with a code.
A sync never waits for any of this.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.kit.aio import wait_event
from imagesync.kit.db import session_scope, utcnow
from imagesync.media.probe import MediaError
from imagesync.media.renditions import decoded_bytes, make_renditions, target_widths
from imagesync.queue import RENDITIONS
from imagesync.storage import repository
from imagesync.storage.context import Blobs
from imagesync.storage.models import Blob
from imagesync.storage.store import rendition_key

log = structlog.get_logger(__name__)

RENDER_BLOB = "media.render_blob"
# Behind the syncs: a worker that serves both queues takes a waiting sync first.
RENDITION_PRIORITY = -10
LEASE = timedelta(minutes=2)
MAX_ATTEMPTS = 3
IDLE_POLL_SECONDS = 5.0
BEHIND_POLL_SECONDS = 0.25


async def queue_renditions(
    ctx: Blobs, session: AsyncSession, blobs: Sequence[tuple[int, int]]
) -> int:
    """In the caller's transaction, add the pending renditions these blobs, given as
    (id, width), lack at the configured widths narrower than them, and queue one task
    per blob that got any; how many blobs did."""
    wanted = [(b, w) for b, width in blobs for w in target_widths(width, ctx.rendition_widths)]
    queued = await repository.ensure_renditions(session, wanted)
    for blob_id in sorted(queued):
        await ctx.queue.defer(
            session,
            RENDER_BLOB,
            {"blob_id": blob_id},
            queue=RENDITIONS,
            lock=f"blob:{blob_id}",
            priority=RENDITION_PRIORITY,
        )
    return len(queued)


async def queue_missing(ctx: Blobs, *, batch: int = 200) -> int:
    """Queue renditions that images' blobs lack: blobs stored before renditions
    existed, or a width added to the settings since. Returns how many blobs."""
    queued = 0
    while True:
        async with session_scope(ctx.sessionmaker) as session:
            blobs = await repository.blobs_missing_renditions(
                session, ctx.users, ctx.rendition_widths, batch
            )
            await queue_renditions(ctx, session, [(b.id, b.width) for b in blobs])
        queued += len(blobs)
        if len(blobs) < batch:
            return queued


@dataclass(frozen=True)
class _Claimed:
    """A blob's pending renditions, taken, and what making them needs of the blob."""

    blob_id: int
    widths: list[int]
    sha256: str
    storage_key: str
    collecting: bool


async def _claim(session: AsyncSession, blob_id: int, now: datetime) -> _Claimed | None:
    """Take the blob's pending renditions and read the blob, in one transaction."""
    widths = await repository.claim_renditions(session, blob_id, now, now + LEASE)
    if not widths:
        return None
    blob = await session.get(Blob, blob_id)
    if blob is None:
        return None
    return _Claimed(
        blob_id, widths, blob.sha256, blob.storage_key, blob.collecting_since is not None
    )


async def render_next(ctx: Blobs) -> bool:
    """Claim one blob with pending renditions and make them; false when none wait. Two
    transactions: one takes them and reads the blob, one records what was made."""
    now = utcnow()
    async with session_scope(ctx.sessionmaker) as session:
        for blob_id in await repository.blobs_needing_renditions(session, now, 5):
            claimed = await _claim(session, blob_id, now)
            if claimed is not None:
                break
        else:
            return False
    await render_blob(ctx, claimed)
    return True


async def render_queued(ctx: Blobs, blob_id: int, *, final_attempt: bool) -> None:
    """Make one blob's pending renditions as a queue's task (procrastinate). An
    unexpected error is raised for the queue to retry, but on the final attempt the
    renditions end `failed` with the reason."""
    async with session_scope(ctx.sessionmaker) as session:
        claimed = await _claim(session, blob_id, utcnow())
    if claimed is None:
        return  # made already, or another runner holds them
    try:
        if await render_blob(ctx, claimed):
            # The queue's retry is the backoff: the next run may take them at once.
            async with session_scope(ctx.sessionmaker) as session:
                await repository.release_renditions(session, blob_id)
            raise RenditionsPending(blob_id)
    except RenditionsPending:
        raise
    except Exception:
        if not final_attempt:
            raise
        log.exception("renditions.gave_up", blob=blob_id)
        async with session_scope(ctx.sessionmaker) as session:
            for rendition in await repository.claimed_renditions(session, blob_id, utcnow()):
                rendition.state = "failed"
                rendition.error = "internal_error: the renditions could not be made"
                rendition.lease_expires_at = None
                rendition.updated_at = utcnow()


class RenditionsPending(Exception):
    """The store failed; the renditions are tried again after a backoff."""


async def render_blob(ctx: Blobs, claimed: _Claimed) -> bool:
    """Make the claimed renditions of one blob; true when some are left pending for
    another try (the store failed)."""
    blob_id, widths = claimed.blob_id, claimed.widths
    sha256, storage_key, collecting = claimed.sha256, claimed.storage_key, claimed.collecting
    made: dict[int, tuple[int, int, str]] = {}
    error: str | None = None
    transient = False
    if collecting:
        error = "the original is being deleted"
    else:
        try:
            original = await ctx.store.read(storage_key)
            budget = ctx.decode_budget
            # One over the whole budget is refused by `make_renditions` from its header.
            async with budget.reserve(min(decoded_bytes(original), budget.total)):
                renditions = await asyncio.to_thread(
                    make_renditions, original, widths, limits=ctx.media
                )
            for width, rendered in renditions.items():
                key = rendition_key(sha256, width)
                await ctx.store.put_bytes(key, rendered.data)
                made[width] = (rendered.height, len(rendered.data), key)
        except MediaError as exc:
            error = f"{exc.code}: {exc.detail}"
        except Exception as exc:  # the store failed: worth another try
            log.exception("renditions.store_failed", blob=blob_id)
            error = f"storage_error: {getattr(exc, 'detail', 'the store failed')}"
            transient = True
    retry = False
    async with session_scope(ctx.sessionmaker) as session:
        now = utcnow()
        for rendition in await repository.claimed_renditions(session, blob_id, now):
            rendition.updated_at = now
            if rendition.width in made:
                rendition.height, rendition.size, rendition.storage_key = made[rendition.width]
                rendition.state = "ready"
                rendition.error = None
            elif transient and rendition.attempts < MAX_ATTEMPTS:
                rendition.lease_expires_at = now + timedelta(seconds=30 * rendition.attempts)
                rendition.error = error
                retry = True
            else:
                rendition.state = "failed"
                rendition.error = error or "the original is narrower than this width"
            if rendition.state != "pending":
                rendition.lease_expires_at = None
    log.info("renditions.made", blob=blob_id, ready=sorted(made), error=error)
    return retry


class RenditionWorker:
    """Makes pending renditions in the background, one blob at a time per slot, behind
    the downloads: while `downloads_busy()` says downloads are running, it waits, so
    that they keep the CPU; it catches up as soon as they ease."""

    def __init__(
        self,
        ctx: Blobs,
        *,
        concurrency: int = 1,
        downloads_busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.ctx = ctx
        self.concurrency = concurrency
        self.downloads_busy = downloads_busy
        self._wake = asyncio.Event()
        self._tasks: Sequence[asyncio.Task[None]] = []

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        try:
            queued = await queue_missing(self.ctx)
        except Exception:
            log.exception("renditions.backfill_failed")
        else:
            if queued:
                log.info("renditions.backfilled", blobs=queued)
        self._tasks = [
            asyncio.create_task(self._loop(), name=f"renditions-{i}")
            for i in range(self.concurrency)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            while self.downloads_busy():
                await asyncio.sleep(BEHIND_POLL_SECONDS)
            try:
                busy = await render_next(self.ctx)
            except Exception:
                log.exception("renditions.worker_failed")
                busy = False
            if not busy:
                self._wake.clear()
                await wait_event(self._wake, IDLE_POLL_SECONDS)
