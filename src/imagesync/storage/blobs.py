"""Recording stored bytes: one blob row and one object per distinct sha256.

A blob row exists only once its object is stored, and the collector deletes the object
before the row, so a row that is not being collected always has its object. Bytes whose
blob is being collected wait for the collector to finish, then are stored anew.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.kit.db import utcnow
from imagesync.media.probe import ProbedImage
from imagesync.storage import repository
from imagesync.storage.models import Blob
from imagesync.storage.store import BlobStore, blob_key


class BeingCollected(Exception):
    """The blob with these bytes is being deleted: wait, then record them again."""


async def record_blob(
    session: AsyncSession,
    store: BlobStore,
    *,
    sha256: str,
    size: int,
    path: Path,
    probed: ProbedImage,
) -> Blob:
    """The live blob with these bytes, in the caller's transaction: the existing one,
    marked in use now, or a new one, stored first and then added. Raises `BeingCollected`,
    or `StorageError` when the store refuses the bytes; an `IntegrityError` at flush means
    another process recorded the same bytes at once (try again: it finds theirs)."""
    blob = await repository.get_blob(session, sha256)
    if blob is not None and blob.collecting_since is not None:
        raise BeingCollected(sha256)
    if blob is not None:
        await repository.touch_blobs(session, [blob.id], utcnow())
        return blob
    await store.put_file(blob_key(sha256), path)
    blob = Blob(
        sha256=sha256,
        size=size,
        content_type=probed.content_type,
        width=probed.width,
        height=probed.height,
        storage_key=blob_key(sha256),
    )
    session.add(blob)
    await session.flush()
    return blob
