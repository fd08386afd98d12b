"""The downloader against real servers on 127.0.0.1: redirects, limits, timeouts."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from imagesync.fetch.downloader import FetchLimits, SafeFetcher
from imagesync.fetch.errors import FetchError


@pytest.fixture
async def origin() -> AsyncIterator[tuple[web.Application, str, Counter[str]]]:
    hits: Counter[str] = Counter()
    app = web.Application()

    @web.middleware
    async def count(request: web.Request, handler: object) -> web.StreamResponse:
        hits[request.path] += 1
        return await handler(request)  # type: ignore[operator,no-any-return]

    app.middlewares.append(count)

    async def ok(_r: web.Request) -> web.Response:
        return web.Response(body=b"\xff\xd8\xff" + b"x" * 100)

    async def silent(_r: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    async def short(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b"x" * 10)
        assert request.transport is not None
        request.transport.close()  # the connection drops with 990 bytes missing
        return response

    async def redirect(request: web.Request) -> web.Response:
        target = request.query.get("to")
        headers = {"Location": target} if target is not None else {}
        return web.Response(status=302, headers=headers)

    async def loop(_r: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/loop"})

    for path, handler in [
        ("/ok", ok),
        ("/silent", silent),
        ("/short", short),
        ("/redirect", redirect),
        ("/loop", loop),
    ]:
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    yield app, f"http://127.0.0.1:{port}", hits
    await runner.cleanup()


def fetcher(base: str, tmp_path: Path, **limits: float) -> SafeFetcher:
    port = int(base.rsplit(":", 1)[1])
    defaults = {"retries": 1, "backoff_base": 0.01}
    return SafeFetcher(
        allow=frozenset({("127.0.0.1", port)}),
        limits=FetchLimits(**{**defaults, **limits}),  # type: ignore[arg-type]
        temp_dir=tmp_path,
    )


async def code_of(f: SafeFetcher, url: str) -> str:
    async with f:
        with pytest.raises(FetchError) as caught:
            await f.fetch(url)
    return caught.value.code


async def test_a_plain_download_lands_in_a_temporary_file(
    origin: tuple[web.Application, str, Counter[str]], tmp_path: Path
) -> None:
    _, base, _ = origin
    async with fetcher(base, tmp_path) as f:
        download = await f.fetch(f"{base}/ok")
    assert download.size == 103
    assert download.path.read_bytes().startswith(b"\xff\xd8\xff")
    assert download.path.parent == tmp_path


async def test_redirects_are_followed_and_each_hop_is_checked(
    origin: tuple[web.Application, str, Counter[str]], tmp_path: Path
) -> None:
    _, base, hits = origin
    async with fetcher(base, tmp_path) as f:
        download = await f.fetch(f"{base}/redirect?to=/ok")
    assert download.final_url == f"{base}/ok"
    # A hop to a loopback port nobody allowed is refused before connecting.
    assert (
        await code_of(fetcher(base, tmp_path), f"{base}/redirect?to=http://127.0.0.1:9/x")
        == "address_refused"
    )
    assert (
        await code_of(fetcher(base, tmp_path), f"{base}/redirect?to=ftp://127.0.0.1/x")
        == "bad_redirect"
    )
    assert await code_of(fetcher(base, tmp_path), f"{base}/redirect") == "bad_redirect"
    hits.clear()
    assert await code_of(fetcher(base, tmp_path), f"{base}/loop") == "too_many_redirects"
    assert hits["/loop"] == 6  # the first request and 5 redirects, never retried


async def test_a_silent_origin_times_out_and_is_retried(
    origin: tuple[web.Application, str, Counter[str]], tmp_path: Path
) -> None:
    _, base, hits = origin
    loop = asyncio.get_running_loop()
    start = loop.time()
    code = await code_of(
        fetcher(base, tmp_path, total_timeout=0.3, read_timeout=0.3), f"{base}/silent"
    )
    assert code == "timeout"
    assert hits["/silent"] == 2  # retried once
    assert loop.time() - start < 5


async def test_a_body_shorter_than_its_content_length_fails(
    origin: tuple[web.Application, str, Counter[str]], tmp_path: Path
) -> None:
    _, base, _ = origin
    assert await code_of(fetcher(base, tmp_path, retries=0), f"{base}/short") == "connection_error"
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


async def test_urls_with_credentials_or_other_schemes_are_refused(tmp_path: Path) -> None:
    f = SafeFetcher(temp_dir=tmp_path)
    assert await code_of(f, "http://user:pw@127.0.0.1/x") == "invalid_url"
    assert await code_of(SafeFetcher(temp_dir=tmp_path), "file:///etc/passwd") == "invalid_url"
