"""`LocalFile`, how the file route sends a stored file: one of at most 1 MiB in one trip
to a thread, sent whole; a range, a HEAD or a bigger file as Starlette sends them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from imagesync.sync.api import LocalFile


def _app(path: Path) -> Starlette:
    async def file(_request: Request) -> LocalFile:
        return LocalFile(path, media_type="image/jpeg", headers={"ETag": '"abc"'})

    return Starlette(routes=[Route("/f", file, methods=["GET", "HEAD"])])


async def _get(path: Path, headers: dict[str, str] | None = None, method: str = "GET") -> Any:
    transport = httpx.ASGITransport(app=_app(path))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.request(method, "/f", headers=headers)


async def test_a_small_file_is_read_in_one_trip_and_sent_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(bytes(range(256)) * 1000)

    def no_trip(*_: object, **__: object) -> None:
        raise AssertionError("Starlette's way: a trip to a thread per step")

    monkeypatch.setattr(anyio.to_thread, "run_sync", no_trip)
    response = await _get(path)
    assert response.status_code == 200
    assert response.content == path.read_bytes()
    assert response.headers["content-length"] == str(256_000)
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["etag"] == '"abc"'  # the route's, not Starlette's own
    assert "last-modified" in response.headers


async def test_a_range_a_head_and_a_big_file_are_sent_as_starlette_sends_them(
    tmp_path: Path,
) -> None:
    small = tmp_path / "a.jpg"
    small.write_bytes(b"0123456789")
    ranged = await _get(small, {"Range": "bytes=2-4"})
    assert (ranged.status_code, ranged.content) == (206, b"234")
    assert ranged.headers["content-range"] == "bytes 2-4/10"
    head = await _get(small, method="HEAD")
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "10")
    big = tmp_path / "big.jpg"
    big.write_bytes(b"x" * (LocalFile.chunk_size + 1))
    whole = await _get(big)
    assert whole.status_code == 200
    assert whole.content == big.read_bytes()


async def test_a_file_gone_before_it_is_read_is_an_error_as_before(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="does not exist"):
        await _get(tmp_path / "gone.jpg")
