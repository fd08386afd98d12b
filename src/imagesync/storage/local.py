"""Content-addressed blob stores. A blob's key is derived from its sha256, so a write
of the same bytes twice is one file, and a stored file never changes."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path
from typing import Protocol


def blob_key(sha256: str) -> str:
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"


class BlobStore(Protocol):
    async def put_file(self, key: str, path: Path) -> None:
        """Store the file at `path` under `key`, atomically; the file is consumed."""

    async def exists(self, key: str) -> bool: ...

    async def read(self, key: str) -> bytes: ...

    def local_path(self, key: str) -> Path | None:
        """A path to serve the blob from, when the store is a local directory."""


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.temp_dir = root / ".tmp"
        self.temp_dir.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / key

    async def put_file(self, key: str, path: Path) -> None:
        await asyncio.to_thread(self._put_file, key, path)

    def _put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        if target.exists():
            path.unlink(missing_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target, fsync, then rename: readers see all of it or nothing.
        fd, staging = tempfile.mkstemp(dir=target.parent, prefix=".put-")
        try:
            with os.fdopen(fd, "wb") as out, path.open("rb") as source:
                shutil.copyfileobj(source, out, 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
            os.replace(staging, target)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise
        path.unlink(missing_ok=True)

    async def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    async def read(self, key: str) -> bytes:
        return await asyncio.to_thread(self._path(key).read_bytes)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)


def open_store(url: str) -> LocalBlobStore:
    """The store `IMAGESYNC_STORAGE_URL` names (a local directory for now)."""
    if "://" in url and not url.startswith("file://"):
        raise ValueError(f"unsupported storage {url!r}: give a directory")
    return LocalBlobStore(Path(url.removeprefix("file://")))
