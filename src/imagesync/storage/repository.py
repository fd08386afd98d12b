"""All SQL of stored blobs and their renditions. Whether a blob is in use is asked of
the rows the domains declared (`BlobUsers`), never of a table this package knows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Table,
    bindparam,
    delete,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.kit.db import insert_or_skip, utcnow
from imagesync.storage.context import BlobUsers
from imagesync.storage.models import Blob, Rendition

BLOBS = cast(Table, Blob.__table__)
TOUCH_BLOBS = (
    update(BLOBS)
    .where(
        BLOBS.c.id.in_(bindparam("ids", expanding=True)),
        BLOBS.c.collecting_since.is_(None),
    )
    .values(last_used_at=bindparam("now", type_=BLOBS.c.last_used_at.type))
    .returning(BLOBS.c.id)
)


def _in_use(users: BlobUsers) -> ColumnElement[bool]:
    """Some row that holds blobs points at this one, or another condition holds it."""
    held = [exists().where(column == Blob.id) for column in users.holders]
    return or_(*held, *(condition(Blob.id) for condition in users.held_if))


async def touch_blobs(session: AsyncSession, blob_ids: Collection[int], now: datetime) -> set[int]:
    """Mark these blobs as in use now, unless the collector has started on them; the
    ones marked. On PostgreSQL the UPDATE holds the rows until commit, so the
    collector's conditional UPDATE waits and then sees them in use."""
    if not blob_ids:
        return set()
    rows = await session.execute(TOUCH_BLOBS, {"ids": sorted(blob_ids), "now": now})
    return {blob_id for (blob_id,) in rows}


ADD_BLOBS = insert_or_skip(BLOBS, ["sha256"], returning=BLOBS.c.sha256)


async def add_blobs(session: AsyncSession, rows: Sequence[dict[str, object]]) -> set[str]:
    """Insert these blob rows, each once its object is stored; one whose bytes have a row
    already (recorded at once by another worker) is left out. The sha256s of the rows
    this call added."""
    if not rows:
        return set()
    stmt = ADD_BLOBS[session.get_bind().dialect.name]
    return {sha256 for (sha256,) in await session.execute(stmt, list(rows))}


BLOBS_BY_SHA256 = select(
    BLOBS.c.id,
    BLOBS.c.sha256,
    BLOBS.c.content_type,
    BLOBS.c.width,
    BLOBS.c.storage_key,
    BLOBS.c.collecting_since,
).where(BLOBS.c.sha256.in_(bindparam("shas", expanding=True)))


async def blobs_by_sha256(session: AsyncSession, sha256s: Collection[str]) -> dict[str, Any]:
    """The blobs of these sha256s, by sha256: plain rows of their `id`, `sha256`,
    `content_type`, `width`, `storage_key` and `collecting_since`."""
    if not sha256s:
        return {}
    rows = await session.execute(BLOBS_BY_SHA256, {"shas": sorted(sha256s)})
    return {row.sha256: row for row in rows}


RENDITIONS = cast(Table, Rendition.__table__)
ADD_RENDITIONS = insert_or_skip(RENDITIONS, ["blob_id", "width"], returning=RENDITIONS.c.blob_id)


async def ensure_renditions(session: AsyncSession, wanted: Collection[tuple[int, int]]) -> set[int]:
    """Add a pending rendition for each (blob_id, width) that has none yet; the blobs
    that got one. A concurrent sync adding the same pair is not an error (nothing is
    inserted twice)."""
    if not wanted:
        return set()
    now = utcnow()
    rows = [
        {
            "blob_id": b,
            "width": w,
            "state": "pending",
            "created_at": now,
            "updated_at": now,
        }
        for b, w in sorted(set(wanted))
    ]
    stmt = ADD_RENDITIONS[session.get_bind().dialect.name]
    return {blob_id for (blob_id,) in await session.execute(stmt, rows)}


async def renditions_of_blobs(
    session: AsyncSession, blob_ids: Collection[int]
) -> dict[int, list[Rendition]]:
    found: dict[int, list[Rendition]] = defaultdict(list)
    if not blob_ids:
        return found
    stmt = (
        select(Rendition)
        .where(Rendition.blob_id.in_(sorted(blob_ids)))
        .order_by(Rendition.width)
        .execution_options(populate_existing=True)
    )
    for rendition in (await session.scalars(stmt)).all():
        found[rendition.blob_id].append(rendition)
    return found


async def pending_renditions(session: AsyncSession, blob_id: int) -> Sequence[Rendition]:
    """The blob's renditions still to be made (its task runs one at a time)."""
    stmt = (
        select(Rendition)
        .where(Rendition.blob_id == blob_id, Rendition.state == "pending")
        .order_by(Rendition.width)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(stmt)).all()


async def blobs_missing_renditions(
    session: AsyncSession, users: BlobUsers, widths: Collection[int], limit: int
) -> Sequence[Blob]:
    """Blobs some image uses that lack a rendition at a configured width they are wider
    than (stored before renditions existed, or a width was added since)."""
    if not widths:
        return []
    missing = [
        (Blob.width > w)
        & ~select(Rendition.id).where(Rendition.blob_id == Blob.id, Rendition.width == w).exists()
        for w in sorted(widths)
    ]
    stmt = (
        select(Blob)
        .where(_in_use(users), Blob.collecting_since.is_(None), or_(*missing))
        .order_by(Blob.id)
        .limit(limit)
    )
    return (await session.scalars(stmt)).all()


# -- collecting unused blobs --------------------------------------------------------------


async def mark_unused_blobs(
    session: AsyncSession, users: BlobUsers, now: datetime, cutoff: datetime, limit: int
) -> int:
    """Start collecting blobs no image uses and nobody used since `cutoff`. One
    conditional UPDATE: a sync that touched or linked a blob meanwhile wins."""
    unused_since_cutoff = (
        Blob.collecting_since.is_(None),
        func.coalesce(Blob.last_used_at, Blob.created_at) < cutoff,
        ~_in_use(users),
    )
    candidates = select(Blob.id).where(*unused_since_cutoff).order_by(Blob.id).limit(limit)
    ids = (await session.scalars(candidates)).all()
    if not ids:
        return 0
    # Checked again in the UPDATE itself: what changed since the SELECT wins.
    stmt = update(Blob).where(Blob.id.in_(ids), *unused_since_cutoff).values(collecting_since=now)
    result: CursorResult[tuple[()]] = await session.execute(stmt)  # type: ignore[assignment]
    return result.rowcount


async def blobs_being_collected(session: AsyncSession, limit: int) -> Sequence[Blob]:
    stmt = select(Blob).where(Blob.collecting_since.is_not(None)).order_by(Blob.id).limit(limit)
    return (await session.scalars(stmt)).all()


async def rendition_keys(session: AsyncSession, blob_ids: Collection[int]) -> list[str]:
    stmt = select(Rendition.storage_key).where(
        Rendition.blob_id.in_(sorted(blob_ids)), Rendition.storage_key.is_not(None)
    )
    return [k for k in (await session.scalars(stmt)).all() if k]


async def delete_blobs(session: AsyncSession, users: BlobUsers, blob_ids: Collection[int]) -> None:
    """Delete collected blobs with their renditions and the rows that only remember them
    (`users.dependents`: a URL sent again is then downloaded again)."""
    ids = sorted(blob_ids)
    for column in users.dependents:
        await session.execute(delete(column.class_).where(column.in_(ids)))
    await session.execute(delete(Rendition).where(Rendition.blob_id.in_(ids)))
    await session.execute(delete(Blob).where(Blob.id.in_(ids), Blob.collecting_since.is_not(None)))


async def forget_new_blobs(session: AsyncSession, blob_ids: Collection[int]) -> None:
    """Delete blobs added in this transaction, before anything uses them."""
    await session.execute(delete(Blob).where(Blob.id.in_(sorted(blob_ids))))


async def known_storage_keys(session: AsyncSession, keys: Collection[str]) -> set[str]:
    """Which of these keys a blob or a rendition row points to."""
    if not keys:
        return set()
    blobs = select(Blob.storage_key).where(Blob.storage_key.in_(sorted(keys)))
    renditions = select(Rendition.storage_key).where(Rendition.storage_key.in_(sorted(keys)))
    found = set((await session.scalars(blobs)).all())
    found.update(k for k in (await session.scalars(renditions)).all() if k)
    return found
