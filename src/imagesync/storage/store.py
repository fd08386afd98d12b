"""Content-addressed blob stores behind one interface, `BlobStore`: a local directory,
an S3-compatible bucket or memory, all three through obstore. A blob's key derives from its
sha256, so the same bytes are one object and a stored object never changes.

Writes are atomic on every backend: a local write goes to a staging file renamed into
place, an S3 PUT becomes visible whole or not at all, memory swaps one reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import obstore
from obstore.store import LocalStore, MemoryStore, S3Store

from imagesync.kit.settings import Settings

# Stored bytes never change under their key: caches may keep them for a year.
IMMUTABLE = "public, max-age=31536000, immutable"


def blob_key(sha256: str) -> str:
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"


def rendition_key(sha256: str, width: int) -> str:
    """Renditions live beside nothing else: one folder per original."""
    return f"renditions/{sha256[:2]}/{sha256[2:4]}/{sha256}/{width}.webp"


@dataclass(frozen=True)
class S3Options:
    endpoint: str = ""
    region: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""


class StorageError(Exception):
    """The store refused or failed a write: a read-only or full disk, a bucket that
    refuses writes, an unreachable endpoint. Worth another try later. Its text is for
    the tenant (no path, no endpoint); `internal` is the operator's."""

    code = "storage_error"

    def __init__(self, detail: str, *, internal: str | None = None) -> None:
        self.detail = detail
        self.internal = internal
        super().__init__(detail)


class BlobStore(Protocol):
    """Where blobs and renditions are kept. Downloads are staged elsewhere
    (`storage.staging`), so that a full or failing store leaves staging alone."""

    kind: str

    async def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        """Store the file at `path` under `key`, atomically. The file stays. A bucket
        keeps its `content_type` and an immutable `Cache-Control`, to serve it itself
        (`IMAGESYNC_PUBLIC_BASE_URL`). Raises `StorageError` when the store refuses it."""

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> None:
        """Store `data` under `key`, atomically, as `put_file` does."""

    async def exists(self, key: str) -> bool: ...

    async def read(self, key: str) -> bytes: ...

    async def open(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes in chunks; a missing key fails here, before any byte."""

    async def delete(self, keys: list[str]) -> None:
        """Delete these keys; a key already gone is not an error."""

    async def keys(self, prefix: str = "") -> list[str]: ...

    def listing(
        self, prefix: str = "", *, batch: int = 500
    ) -> AsyncIterator[list[tuple[str, datetime]]]:
        """Every stored key with when it was written, a batch at a time."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A path to serve the blob from, when the store is a local directory."""


class _ObjectStore:
    """The three stores share obstore's one interface; they differ in how they are built."""

    kind = "object"
    # Whether objects keep HTTP attributes (a bucket serves them with these headers).
    serves_objects = False

    def __init__(self, store: Any) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    async def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        await self._put(key, path, content_type)

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> None:
        await self._put(key, data, content_type)

    async def _put(self, key: str, data: Path | bytes, content_type: str) -> None:
        attributes = None
        if self.serves_objects:  # keys are content-addressed: the bytes never change
            attributes = {"Content-Type": content_type, "Cache-Control": IMMUTABLE}
        try:
            await obstore.put_async(self._store, key, data, attributes=attributes)
        except Exception as exc:  # obstore's errors, or an OSError from a local disk
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            number = _errno(exc)
            reason = f" ({os.strerror(number).lower()})" if number else ""
            raise StorageError(
                f"the {self.kind} store refused the file{reason}",
                internal=f"{key}: {type(exc).__name__} {detail}".strip(),
            ) from exc

    async def exists(self, key: str) -> bool:
        try:
            await obstore.head_async(self._store, key)
        except FileNotFoundError:
            return False
        return True

    async def read(self, key: str) -> bytes:
        result = await obstore.get_async(self._store, key)
        return bytes(await result.bytes_async())

    async def open(self, key: str) -> AsyncIterator[bytes]:
        result = await obstore.get_async(self._store, key)

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in result.stream(min_chunk_size=256 * 1024):
                yield bytes(chunk)

        return chunks()

    async def delete(self, keys: list[str]) -> None:
        if not keys:
            return
        try:
            await obstore.delete_async(self._store, keys)  # one request per 1000 on S3
        except FileNotFoundError:
            for key in keys:
                with contextlib.suppress(FileNotFoundError):
                    await obstore.delete_async(self._store, key)

    async def keys(self, prefix: str = "") -> list[str]:
        return [key async for batch in self.listing(prefix) for key, _ in batch]

    async def listing(
        self, prefix: str = "", *, batch: int = 500
    ) -> AsyncIterator[list[tuple[str, datetime]]]:
        async for found in obstore.list(self._store, prefix or None, chunk_size=batch):
            yield [(meta["path"], meta["last_modified"]) for meta in found]

    def local_path(self, key: str) -> Path | None:  # noqa: ARG002
        return None


class DirectoryStore(_ObjectStore):
    """A local directory; files are written to a staging file and renamed into place. A
    file on the same file system is linked into place instead: its bytes are not written
    a second time."""

    kind = "local"

    def __init__(self, root: Path) -> None:
        root = root.resolve()
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(LocalStore(root, mkdir=True))
        self.root = root

    async def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        if not await asyncio.to_thread(self._link, key, path):
            await super().put_file(key, path, content_type=content_type)

    def _link(self, key: str, path: Path) -> bool:
        """Link `path` in as `key`: under a name of its own beside the key, then renamed
        into place, so the key appears whole. False where that fails (another file
        system, one without links, a refused write): the caller copies the bytes, and
        says why the store refused them."""
        target = self.root / key
        linked = target.with_name(f"{target.name}#{uuid.uuid4().hex}")
        try:
            try:
                os.link(path, linked)
            except FileNotFoundError:
                if not path.exists():
                    return False
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, linked)
            # Readable and dated as a copy would be: staged downloads are private to
            # their owner, and bytes kept from an earlier attempt may be old, where the
            # sweep takes an old file no row knows for an orphan.
            os.chmod(linked, 0o666 & ~_UMASK)
            os.utime(linked)
            os.replace(linked, target)
        except OSError:
            with contextlib.suppress(OSError):
                linked.unlink(missing_ok=True)
            return False
        return True

    def local_path(self, key: str) -> Path | None:
        return self.root / key


class S3BlobStore(_ObjectStore):
    """An S3-compatible bucket, optionally under a prefix. A PUT is visible whole or not
    at all."""

    kind = "s3"
    serves_objects = True

    def __init__(self, bucket: str, prefix: str = "", options: S3Options | None = None) -> None:
        options = options or S3Options()
        config: dict[str, Any] = {
            name: value
            for name, value in (
                ("endpoint", options.endpoint),
                ("region", options.region),
                ("access_key_id", options.access_key_id),
                ("secret_access_key", options.secret_access_key),
            )
            if value
        }
        store = S3Store(
            bucket,
            prefix=prefix.strip("/") or None,
            # A plain-http endpoint (a local S3-compatible server) must be allowed.
            client_options={"allow_http": options.endpoint.startswith("http://")},
            **config,
        )
        super().__init__(store)


class MemoryBlobStore(_ObjectStore):
    """Gone when the process ends: for tests and trials."""

    kind = "memory"

    def __init__(self) -> None:
        super().__init__(MemoryStore())


def open_store(url: str, s3: S3Options | None = None) -> BlobStore:
    """The store `IMAGESYNC_STORAGE_URL` names: a directory (or file://PATH),
    s3://BUCKET[/PREFIX], or memory:// (gone when the process ends: for tests)."""
    if url.startswith("memory://"):
        return MemoryBlobStore()
    if url.startswith("s3://"):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"{url!r} names no bucket: use s3://BUCKET[/PREFIX]")
        return S3BlobStore(bucket, prefix, s3)
    if "://" in url and not url.startswith("file://"):
        raise ValueError(f"unsupported storage {url!r}: give a directory, s3://... or memory://")
    return DirectoryStore(Path(url.removeprefix("file://")))


def store_from_settings(settings: Settings) -> BlobStore:
    """The store the `IMAGESYNC_STORAGE_URL` and `IMAGESYNC_S3_*` settings describe."""
    return open_store(
        settings.storage_url,
        S3Options(
            endpoint=settings.s3_endpoint,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
        ),
    )


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once, at start: setting it is process-wide


def _errno(exc: BaseException) -> int | None:
    """The errno of an OS error, also when a library wrapped it."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno:
            return exc.errno
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None
