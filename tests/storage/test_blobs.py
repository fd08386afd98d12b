"""One blob store interface, three backends: a local directory, a real S3-compatible
server on 127.0.0.1 (moto) and memory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest

from imagesync.kit.settings import SettingsError, load_settings
from imagesync.storage.store import BlobStore, blob_key, open_store
from tests.conftest import S3Server


@pytest.fixture(params=["local", "s3", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    match request.param:
        case "local":
            return open_store(str(tmp_path / "files"))
        case "s3":
            s3: S3Server = request.getfixturevalue("s3_server")
            return open_store(f"s3://{s3.new_bucket()}/some/prefix", s3.options)
        case _:
            return open_store("memory://")


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / f"source-{hashlib.sha256(data).hexdigest()[:8]}"
    path.write_bytes(data)
    return path


async def test_a_stored_file_reads_back_byte_for_byte(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    key = blob_key(hashlib.sha256(data).hexdigest())
    assert not await store.exists(key)
    source = write(tmp_path, data)
    await store.put_file(key, source, content_type="image/jpeg")
    assert source.exists()  # the staged download is the caller's to delete
    assert await store.exists(key)
    assert await store.read(key) == data
    chunks = [c async for c in await store.open(key)]
    assert b"".join(chunks) == data
    assert await store.keys() == [key]


async def test_writing_the_same_key_again_is_harmless(store: BlobStore, tmp_path: Path) -> None:
    await store.put_bytes("aa/bb/x", b"same", content_type="image/jpeg")
    await store.put_file("aa/bb/x", write(tmp_path, b"same"), content_type="image/jpeg")
    assert await store.read("aa/bb/x") == b"same"


async def test_deleting_is_idempotent(store: BlobStore) -> None:
    await store.put_bytes("aa/bb/one", b"1", content_type="image/jpeg")
    await store.put_bytes("aa/bb/two", b"2", content_type="image/jpeg")
    await store.delete(["aa/bb/one", "aa/bb/missing"])
    assert not await store.exists("aa/bb/one")
    assert await store.exists("aa/bb/two")
    await store.delete(["aa/bb/one"])
    with pytest.raises(FileNotFoundError):
        await store.open("aa/bb/one")


async def test_a_write_is_never_seen_half_done(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(8 * 1024 * 1024)
    source = write(tmp_path, data)
    seen: list[int] = []
    done = asyncio.Event()

    async def reader() -> None:
        while not done.is_set():
            try:
                seen.append(len(await store.read("big/blob")))
            except FileNotFoundError:
                seen.append(0)
            await asyncio.sleep(0)

    task = asyncio.create_task(reader())
    await store.put_file("big/blob", source, content_type="image/jpeg")
    done.set()
    await task
    seen.append(len(await store.read("big/blob")))
    assert set(seen) <= {0, len(data)}
    assert seen[-1] == len(data)


async def test_a_local_store_links_a_file_of_its_own_file_system(tmp_path: Path) -> None:
    """The staged download becomes the stored file: linked, not written again; readable
    and dated as a copy would be (a staged file is its owner's alone, and bytes kept
    from an earlier attempt may be a day old: the sweep takes an old file no row knows
    for an orphan)."""
    store = open_store(str(tmp_path / "files"))
    source = write(tmp_path, os.urandom(100_000))
    source.chmod(0o600)
    day_ago = time.time() - 24 * 3600
    os.utime(source, (day_ago, day_ago))
    await store.put_file("aa/bb/linked", source, content_type="image/jpeg")
    stored = tmp_path / "files" / "aa" / "bb" / "linked"
    assert stored.stat().st_ino == source.stat().st_ino
    assert stored.stat().st_mtime > time.time() - 60
    mask = os.umask(0)
    os.umask(mask)
    assert stored.stat().st_mode & 0o777 == 0o666 & ~mask
    assert sorted(p.name for p in stored.parent.iterdir()) == ["linked"]  # no leftover
    source.unlink()  # as the downloader does once stored
    assert await store.read("aa/bb/linked") == stored.read_bytes()


async def test_a_local_store_copies_a_file_of_another_file_system(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second file system: /dev/shm")
    store = open_store(str(tmp_path / "files"))
    data = os.urandom(100_000)
    source = shm / f"imagesync-test-{os.getpid()}-{hashlib.sha256(data).hexdigest()[:8]}"
    source.write_bytes(data)
    try:
        await store.put_file("aa/bb/copied", source, content_type="image/jpeg")
        stored = tmp_path / "files" / "aa" / "bb" / "copied"
        assert stored.stat().st_ino != source.stat().st_ino
        assert await store.read("aa/bb/copied") == data
        assert sorted(p.name for p in stored.parent.iterdir()) == ["copied"]
    finally:
        source.unlink()


def test_local_stores_serve_from_disk_and_others_stream(tmp_path: Path) -> None:
    local = open_store(str(tmp_path / "files"))
    assert local.local_path("aa/bb/c") == (tmp_path / "files" / "aa/bb/c").resolve()
    assert open_store("memory://").local_path("aa/bb/c") is None


@pytest.mark.parametrize("url", ["ftp://x/y", "s3://", "s3:///prefix", "gs://bucket"])
def test_unknown_storage_urls_are_refused_at_start(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGESYNC_STORAGE_URL", url)
    with pytest.raises(SettingsError, match="IMAGESYNC_STORAGE_URL"):
        load_settings()
