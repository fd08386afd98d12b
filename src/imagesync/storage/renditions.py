"""Making renditions: the queued task that follows a blob's first use.

Each (blob, width) is a `rendition` row, added pending in the transaction that starts
using the blob, together with one queued task per blob, so nothing is lost between
"used" and "queued". The task (one at a time per blob, by its lock) decodes the original
once, stores each WebP and marks it ready, or failed with a code; a store that fails is
the queue's to retry. A sync never waits for any of this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.kit.db import session_scope, utcnow
from imagesync.media.probe import MediaError
from imagesync.media.renditions import decoded_bytes, make_renditions, target_widths
from imagesync.queue import Attempt, Job
from imagesync.storage import repository
from imagesync.storage.context import Blobs
from imagesync.storage.models import Blob
from imagesync.storage.store import rendition_key

log = structlog.get_logger(__name__)

RENDER_BLOB = "media.render_blob"
# Behind the syncs: a worker that serves both queues takes a waiting sync first.
RENDITION_PRIORITY = -10


async def queue_renditions(
    ctx: Blobs, session: AsyncSession, blobs: Sequence[tuple[int, int]]
) -> int:
    """In the caller's transaction, add the pending renditions these blobs, given as
    (id, width), lack at the configured widths narrower than them, and queue one task
    per blob that got any; how many blobs did."""
    wanted = [(b, w) for b, width in blobs for w in target_widths(width, ctx.rendition_widths)]
    queued = await repository.ensure_renditions(session, wanted)
    await ctx.queue.defer(
        session,
        RENDER_BLOB,
        [Job({"blob_id": blob_id}, lock=f"blob:{blob_id}") for blob_id in sorted(queued)],
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


class RenditionsPending(Exception):
    """The store failed: the renditions are tried again after the queue's backoff."""


async def render(ctx: Blobs, blob_id: int, attempt: Attempt) -> None:
    """Make one blob's pending renditions. Two transactions: one reads them and the
    blob, one records what was made. A store that fails leaves them pending and raises
    `RenditionsPending` for the queue to retry; on the final attempt they end `failed`."""
    async with session_scope(ctx.sessionmaker) as session:
        pending = await repository.pending_renditions(session, blob_id)
        blob = await session.get(Blob, blob_id) if pending else None
    if blob is None:
        return  # made already, or the blob was collected
    widths = [r.width for r in pending]
    made: dict[int, tuple[int, int, str]] = {}
    error: str | None = None
    transient = False
    if blob.collecting_since is not None:
        error = "the original is being deleted"
    else:
        try:
            original = await ctx.store.read(blob.storage_key)
            budget = ctx.decode_budget
            # One over the whole budget is refused by `make_renditions` from its header.
            async with budget.reserve(min(decoded_bytes(original), budget.total)):
                renditions = await asyncio.to_thread(
                    make_renditions, original, widths, limits=ctx.media
                )
            for width, rendered in renditions.items():
                key = rendition_key(blob.sha256, width)
                await ctx.store.put_bytes(key, rendered.data, content_type="image/webp")
                made[width] = (rendered.height, len(rendered.data), key)
        except MediaError as exc:
            error = f"{exc.code}: {exc.detail}"
        except Exception as exc:  # the store failed: worth another try
            log.exception("renditions.store_failed", blob=blob_id, attempt=attempt.number)
            error = f"storage_error: {getattr(exc, 'detail', 'the store failed')}"
            transient = True
    retry = transient and not attempt.final
    async with session_scope(ctx.sessionmaker) as session:
        now = utcnow()
        for rendition in await repository.pending_renditions(session, blob_id):
            rendition.updated_at = now
            if rendition.width in made:
                rendition.height, rendition.size, rendition.storage_key = made[rendition.width]
                rendition.state = "ready"
                rendition.error = None
            elif retry:
                rendition.error = error
            else:
                rendition.state = "failed"
                rendition.error = error or "the original is narrower than this width"
    log.info("renditions.made", blob=blob_id, ready=sorted(made), error=error)
    if retry:
        raise RenditionsPending(blob_id)
