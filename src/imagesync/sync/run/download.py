"""Downloading identities never seen before: fetch, probe and store each (concurrently,
outside any transaction), then record them all for the account in the transaction that
applies the product (`record`), so that none is downloaded again.

A known identity asked to be refreshed is fetched the same way, but conditionally: its
origin is sent the validators it gave (`If-None-Match`, `If-Modified-Since`), and new
bytes are recorded as its source's bytes from then on.

A store that refuses the bytes (a read-only or full disk, a bucket refusing writes) is
waited for with the bytes kept in hand, so that nothing is downloaded twice; only when
it stays down longer than the waits is the download given up, as `storage_error`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.fetch.downloader import NotModified, SafeFetcher, Validators
from imagesync.fetch.errors import FetchError
from imagesync.kit.db import utcnow
from imagesync.media.probe import MediaError, ProbedImage, probe, read_header
from imagesync.storage import repository as blob_repository
from imagesync.storage.context import Blobs
from imagesync.storage.store import BlobStore, StorageError, blob_key
from imagesync.sync import metrics, repository
from imagesync.sync.core.planner import Identity, ImageSpec
from imagesync.sync.schemas import ImageError

log = structlog.get_logger(__name__)


def store_waits(total: float) -> tuple[float, ...]:
    """Seconds between tries of a store that refuses writes, `total` in all: 1, 2, 4, 8,
    15, then every 30 s; the last wait is cut to fit."""
    waits: list[float] = []
    step, spent = 1.0, 0.0
    while spent < total:
        wait = min(step, total - spent)
        waits.append(wait)
        spent += wait
        step = min(step * 2, 15.0) if step < 15 else 30.0
    return tuple(waits)


STORE_WAITS = store_waits(240.0)  # about 4 minutes

StoreRefused = Callable[[ImageError], Awaitable[None]]


@dataclass(frozen=True)
class Stored:
    """A known identity's blob: what applying an image needs of it, and what refreshing
    it asks its origin (`validators`)."""

    source_id: int
    blob_id: int
    content_type: str
    width: int
    sha256: str
    validators: Validators

    @classmethod
    def of(cls, known: Any) -> Stored:
        """A row of `repository.find_sources`."""
        validators = Validators(known.etag, known.last_modified)
        return cls(
            known.id, known.blob_id, known.content_type, known.width, known.sha256, validators
        )


@dataclass(frozen=True)
class Fetched:
    """Bytes downloaded, checked and stored, not yet recorded: a new identity's, or new
    bytes of a known one (`source_id`) asked to be refreshed."""

    spec: ImageSpec
    sha256: str
    size: int
    probed: ProbedImage
    validators: Validators = field(default_factory=Validators)
    source_id: int | None = None


@dataclass(frozen=True)
class Unchanged:
    """A refresh found the origin's bytes unchanged: it answered 304 (`size` None), or
    sent the same bytes again, with these validators."""

    validators: Validators = field(default_factory=Validators)
    size: int | None = None


Outcome = Fetched | Unchanged | ImageError


async def download(
    fetcher: SafeFetcher,
    blobs: Blobs,
    spec: ImageSpec,
    *,
    store_waits: tuple[float, ...] = STORE_WAITS,
    on_store_refused: StoreRefused | None = None,
    share: str = "",
    known: Stored | None = None,
) -> Outcome:
    """Fetch, probe and store one identity. `on_store_refused` is told the first time
    the store refuses the bytes. Bytes the store still refuses after its waits are kept
    in staging, and the next attempt stores them without downloading them again.
    `share` (the account) is the downloader's fair-share key.

    `known`, the identity's stored bytes, makes it a refresh: a conditional GET, and
    `Unchanged` when the origin's bytes are still those."""
    identity = spec.identity.digest
    kept = blobs.staging.kept(identity)
    validators = Validators()
    if kept is not None:
        path, sha256 = kept
        size = path.stat().st_size
        log.info("sync.download.kept_bytes_used", url=spec.url)
    else:
        try:
            unless = known.validators if known is not None else None
            fetched = await fetcher.fetch(spec.url, share=share, unless=unless)
        except FetchError as exc:
            metrics.DOWNLOADS.labels(exc.code).inc()
            if exc.internal is not None:
                log.warning(
                    "sync.download.failed", url=spec.url, code=exc.code, internal=exc.internal
                )
            return ImageError(code=exc.code, detail=exc.detail)
        if isinstance(fetched, NotModified):
            metrics.DOWNLOADS.labels("not_modified").inc()
            return Unchanged()
        path, sha256, size = fetched.path, fetched.sha256, fetched.size
        validators = fetched.validators
        metrics.DOWNLOADS.labels("fetched").inc()
        metrics.DOWNLOADED_BYTES.inc(size)
    keep = False
    try:
        if known is not None and sha256 == known.sha256:
            # Bytes kept from an earlier attempt were not downloaded now: nothing to note.
            return Unchanged(validators, size) if kept is None else Unchanged()
        header = await asyncio.to_thread(read_header, path, limits=blobs.media)
        async with blobs.decode_budget.reserve(header.decoded_bytes):
            probed = await asyncio.to_thread(probe, path, limits=blobs.media, header=header)
        waits = iter(store_waits)
        while True:
            try:
                # Stored before any row points to it; a row never points to nothing.
                await blobs.store.put_file(blob_key(sha256), path, content_type=probed.content_type)
                source_id = known.source_id if known is not None else None
                return Fetched(spec, sha256, size, probed, validators, source_id)
            except StorageError as exc:
                error = ImageError(code=exc.code, detail=exc.detail)
                wait = next(waits, None)
                log.warning(
                    "sync.store_refused", url=spec.url, internal=exc.internal, retry_in=wait
                )
                if wait is None:
                    keep = True
                    return error
                if on_store_refused is not None:
                    await on_store_refused(error)
                    on_store_refused = None
                await asyncio.sleep(wait)
    except MediaError as exc:
        return ImageError(code=exc.code, detail=exc.detail)
    finally:
        # In a thread: even if this task is cancelled meanwhile, the file goes (or stays
        # kept for the next attempt).
        if keep:
            await asyncio.to_thread(blobs.staging.keep, identity, sha256, path)
        else:
            await asyncio.to_thread(path.unlink, missing_ok=True)


async def reuse(
    session: AsyncSession, account_id: int, digests: Collection[str]
) -> dict[str, Stored]:
    """The blobs of the identities the account has seen before, by digest, marked in use
    from now: the collector leaves them alone. One it has started on is not reused (it
    is downloaded again)."""
    sources = await repository.find_sources(session, account_id, digests)
    touched = await blob_repository.touch_blobs(
        session, {s.blob_id for s in sources.values()}, utcnow()
    )
    return {key: Stored.of(s) for key, s in sources.items() if s.blob_id in touched}


async def record(
    session: AsyncSession, store: BlobStore, account_id: int, fetched: Mapping[Identity, Fetched]
) -> dict[Identity, Stored | ImageError]:
    """In the caller's transaction, the blob and the account's source of each download:
    added, or found when another worker recorded the same bytes or identity at once; a
    refreshed source points to its new bytes from now on. Bytes whose blob is being
    collected are refused (`store_conflict`: the product is tried again, and downloads
    them again once the collector is done)."""
    if not fetched:
        return {}
    now = utcnow()
    shas = {f.sha256 for f in fetched.values()}
    inserted = await blob_repository.add_blobs(
        session,
        [
            {
                "sha256": f.sha256,
                "size": f.size,
                "content_type": f.probed.content_type,
                "width": f.probed.width,
                "height": f.probed.height,
                "storage_key": blob_key(f.sha256),
                "created_at": now,
                "last_used_at": now,
            }
            for f in fetched.values()
        ],
    )
    blobs = await blob_repository.blobs_by_sha256(session, shas)
    live = {sha: b for sha, b in blobs.items() if b.collecting_since is None}
    # Bytes are stored under their hash, so the collector, deleting an old copy of the
    # same bytes, may have deleted the file of a download stored just before. It deletes
    # a file before its row, and a row of ours could only be added once that old row was
    # gone: whether the file is there now is final. A row added for a lost file is
    # dropped again, and the download repeated (`store_conflict` below).
    added = [b for sha, b in live.items() if sha in inserted]
    present = await asyncio.gather(*(store.exists(b.storage_key) for b in added))
    lost = [b for b, there in zip(added, present, strict=True) if not there]
    if lost:
        log.warning("sync.stored_copy_lost", sha256=[b.sha256 for b in lost])
        await blob_repository.forget_new_blobs(session, [b.id for b in lost])
        live = {sha: b for sha, b in live.items() if b not in lost}
    await blob_repository.touch_blobs(session, {b.id for b in live.values()}, now)
    await repository.add_sources(
        session,
        [
            {
                "account_id": account_id,
                "identity_kind": identity.kind,
                "identity": identity.value,
                "identity_hash": identity.digest,
                "blob_id": live[f.sha256].id,
                "url": f.spec.url,
                "created_at": now,
                **_validators(f.validators, f.size),
            }
            for identity, f in fetched.items()
            if f.sha256 in live and f.source_id is None
        ],
    )
    await repository.update_sources(
        session,
        [
            {
                "id": f.source_id,
                "blob_id": live[f.sha256].id,
                "url": f.spec.url,
                **_validators(f.validators, f.size),
            }
            for f in fetched.values()
            if f.sha256 in live and f.source_id is not None
        ],
    )
    sources = await repository.find_sources(
        session, account_id, [i.digest for i, f in fetched.items() if f.source_id is None]
    )
    conflict = ImageError(
        code="store_conflict",
        detail="the stored copy of these bytes is being deleted; tried again",
    )
    recorded: dict[Identity, Stored | ImageError] = {}
    for identity, f in fetched.items():
        blob = live.get(f.sha256)
        source = sources.get(identity.digest)
        if blob is None:
            recorded[identity] = conflict
        elif f.source_id is not None:  # refreshed: the source moved to these bytes above
            recorded[identity] = Stored(
                f.source_id, blob.id, blob.content_type, blob.width, blob.sha256, f.validators
            )
        else:
            recorded[identity] = Stored.of(source) if source is not None else conflict
    return recorded


async def remember_validators(
    session: AsyncSession, unchanged: Iterable[tuple[Stored, Unchanged]]
) -> None:
    """The validators an origin sent with the same bytes again, where they are new: the
    next refresh of that source sends these."""
    await repository.update_sources(
        session,
        [
            {"id": known.source_id, **_validators(u.validators, u.size)}
            for known, u in unchanged
            if u.size is not None and u.validators != known.validators
        ],
    )


def _validators(validators: Validators, size: int) -> dict[str, object]:
    return {"etag": validators.etag, "last_modified": validators.last_modified, "length": size}


class FetchDeduper:
    """One download per (account, identity) at a time in this process: two products
    sending the same new URL at once share the download, and two refreshing the same
    known one share the refresh. Only the product that started a download counts it, so
    a job's `downloaded` adds up to the requests its origins saw."""

    def __init__(self) -> None:
        self._inflight: dict[tuple[int, Identity, bool], asyncio.Future[Outcome]] = {}
        self._waiting: Counter[tuple[int, Identity, bool]] = Counter()

    async def fetch(
        self,
        account_id: int,
        identity: Identity,
        start: Callable[[], Awaitable[Outcome]],
        *,
        refresh: bool = False,
    ) -> tuple[Outcome, bool]:
        """The outcome, and whether this call started the download (else it shared one).
        A download whose every product was cut off (a stop, a crash of the run) is
        cancelled with the last of them, never left running unawaited."""
        key = (account_id, identity, refresh)
        future = self._inflight.get(key)
        started = future is None
        if future is None:
            future = asyncio.ensure_future(start())
            self._inflight[key] = future
            future.add_done_callback(lambda _f: self._inflight.pop(key, None))
        self._waiting[key] += 1
        try:
            return await asyncio.shield(future), started
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key]
                future.cancel()  # done already: nothing; else nobody waits for it any more
