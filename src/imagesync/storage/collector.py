"""Collecting blobs nothing uses any more (no `BlobUsers.holders` row), after a grace
period.

Three steps, each safe to repeat after a crash: mark the unused blobs (one conditional
UPDATE, so a sync that has just started to use one wins), delete their files and
renditions from the store, then delete their rows together with the rows that only
remember them (image sync's "seen before" sources), so a URL sent again later is
downloaded again. A marked blob is never handed to a sync; bytes that arrive again
while it is being collected wait and are stored anew.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import structlog

from imagesync.kit.db import session_scope, utcnow
from imagesync.storage import repository
from imagesync.storage.context import Blobs

log = structlog.get_logger(__name__)

BATCH = 200


@dataclass(frozen=True)
class Collected:
    blobs: int
    files: int


async def collect(ctx: Blobs, *, grace: timedelta) -> Collected:
    """One full pass: everything unused since longer than `grace` is deleted."""
    sessionmaker, store = ctx.sessionmaker, ctx.store
    blobs = files = 0
    while True:
        now = utcnow()
        async with session_scope(sessionmaker) as session:
            marked = await repository.mark_unused_blobs(session, ctx.users, now, now - grace, BATCH)
        async with session_scope(sessionmaker) as session:
            doomed = await repository.blobs_being_collected(session, BATCH)
            ids = [b.id for b in doomed]
            keys = [b.storage_key for b in doomed] + await repository.rendition_keys(session, ids)
        if not doomed:
            break
        # Files first, rows last: a row never outlives its file's deletion unnoticed,
        # and a crash in between leaves marked rows that the next pass finishes.
        await store.delete(keys)
        async with session_scope(sessionmaker) as session:
            await repository.delete_blobs(session, ctx.users, ids)
        blobs += len(ids)
        files += len(keys)
        if not marked and len(doomed) < BATCH:
            break
    if blobs:
        log.info("collector.collected", blobs=blobs, files=files)
    return Collected(blobs=blobs, files=files)


async def sweep(ctx: Blobs, *, older_than: timedelta) -> int:
    """Delete stored files no row points to, written more than `older_than` ago: what a
    process that died between storing a file and committing its row left behind. A
    file that young may be about to get its row, so it stays. Lists the whole store:
    run it rarely."""
    sessionmaker, store = ctx.sessionmaker, ctx.store
    cutoff = utcnow() - older_than
    deleted = 0
    async for batch in store.listing():
        old = [key for key, written in batch if written < cutoff]
        async with session_scope(sessionmaker) as session:
            known = await repository.known_storage_keys(session, old)
        orphans = [key for key in old if key not in known]
        if orphans:
            await store.delete(orphans)
            deleted += len(orphans)
    if deleted:
        log.info("collector.swept", files=deleted)
    return deleted
