"""Downloading an identity never seen before: fetch, probe, store, and remember it for
the account, so that it is never downloaded again. What was stored comes back by value.

A store that refuses the bytes (a read-only or full disk, a bucket refusing writes) is
waited for with the bytes kept in hand, so that nothing is downloaded twice; only when
it stays down longer than the waits is the download given up, as `storage_error`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import count

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.fetch.downloader import Download, SafeFetcher
from imagesync.fetch.errors import FetchError
from imagesync.kit.db import session_scope
from imagesync.media.probe import MediaError, ProbedImage, probe
from imagesync.storage.blobs import BeingCollected, record_blob
from imagesync.storage.context import Blobs
from imagesync.storage.models import Blob
from imagesync.storage.store import StorageError
from imagesync.sync import repository
from imagesync.sync.models import Source
from imagesync.sync.planner import Identity, ImageSpec
from imagesync.sync.schemas import ImageError

log = structlog.get_logger(__name__)

# Seconds between tries of a store that refuses writes: about 4 minutes in all.
STORE_WAITS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 30.0, 30.0, 30.0, 30.0, 30.0, 30.0)

StoreRefused = Callable[[ImageError], Awaitable[None]]


@dataclass(frozen=True)
class Stored:
    """A known identity's blob: what applying an image needs of it."""

    source_id: int
    blob_id: int
    content_type: str
    width: int

    @classmethod
    def of(cls, source: Source, blob: Blob) -> Stored:
        return cls(source.id, blob.id, blob.content_type, blob.width)


async def download(
    fetcher: SafeFetcher,
    blobs: Blobs,
    account_id: int,
    spec: ImageSpec,
    *,
    store_waits: tuple[float, ...] = STORE_WAITS,
    on_store_refused: StoreRefused | None = None,
) -> Stored | ImageError:
    """Fetch, probe and store one identity, then remember it for the account.
    `on_store_refused` is told the first time the store refuses the bytes."""
    try:
        fetched = await fetcher.fetch(spec.url)
    except FetchError as exc:
        return ImageError(code=exc.code, detail=exc.detail)
    try:
        probed = await asyncio.to_thread(probe, fetched.path, limits=blobs.media)
        return await _record(
            blobs, account_id, spec, fetched, probed, store_waits, on_store_refused
        )
    except MediaError as exc:
        return ImageError(code=exc.code, detail=exc.detail)
    finally:
        fetched.path.unlink(missing_ok=True)


async def _record(
    blobs: Blobs,
    account_id: int,
    spec: ImageSpec,
    fetched: Download,
    probed: ProbedImage,
    store_waits: tuple[float, ...],
    on_store_refused: StoreRefused | None,
) -> Stored | ImageError:
    waits = iter(store_waits)
    for attempt in count():
        try:
            async with session_scope(blobs.sessionmaker) as session:
                blob = await record_blob(
                    session,
                    blobs.store,
                    sha256=fetched.sha256,
                    size=fetched.size,
                    path=fetched.path,
                    probed=probed,
                )
                return await _remember(session, account_id, spec, blob)
        except IntegrityError:  # another worker recorded the same bytes or identity at once
            if attempt >= 8:
                break
            await asyncio.sleep(0.05 * attempt)
        except BeingCollected:
            if attempt >= 8:
                break
            await asyncio.sleep(min(0.1 * 2**attempt, 5.0))
        except StorageError as exc:
            error = ImageError(code=exc.code, detail=str(exc))
            wait = next(waits, None)
            if wait is None:
                return error
            log.warning("sync.store_refused", url=spec.url, error=str(exc), retry_in=wait)
            if on_store_refused is not None:
                await on_store_refused(error)
                on_store_refused = None
            await asyncio.sleep(wait)
    return ImageError(code="store_conflict", detail="could not record the download; retry")


async def _remember(session: AsyncSession, account_id: int, spec: ImageSpec, blob: Blob) -> Stored:
    """The account's source for this identity: the one recorded meanwhile (another
    worker's download), or a new one pointing at `blob`."""
    identity = spec.identity
    known = await repository.find_sources(session, account_id, [identity.digest])
    if identity.digest in known:
        source = known[identity.digest]
        return Stored.of(source, source.blob)
    source = Source(
        account_id=account_id,
        identity_kind=identity.kind,
        identity=identity.value,
        identity_hash=identity.digest,
        blob_id=blob.id,
        url=spec.url,
    )
    session.add(source)
    await session.flush()
    return Stored.of(source, blob)


class FetchDeduper:
    """One download per (account, identity) at a time in this process: two products
    sending the same new URL at once share the download."""

    def __init__(self) -> None:
        self._inflight: dict[tuple[int, Identity], asyncio.Future[Stored | ImageError]] = {}

    async def fetch(
        self,
        account_id: int,
        identity: Identity,
        start: Callable[[], Awaitable[Stored | ImageError]],
    ) -> Stored | ImageError:
        key = (account_id, identity)
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(start())
            self._inflight[key] = future
            future.add_done_callback(lambda _f: self._inflight.pop(key, None))
        return await asyncio.shield(future)
