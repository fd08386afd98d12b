"""`SafeFetcher.post` (webhook calls): the same address rules as a download, no redirect
followed, a bounded wait. Every connection goes to 127.0.0.1; refused destinations are
refused before any connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from imagesync.fetch.downloader import ANSWER_EXCERPT, SafeFetcher
from imagesync.fetch.errors import AddressRefused, DownloadTimeout, PortRefused
from tests.fetch.conftest import FakeDNS, fetcher


class Endpoint:
    def __init__(self) -> None:
        self.port = 0
        self.received: list[tuple[dict[str, str], bytes]] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    holder = Endpoint()
    routes = web.RouteTableDef()

    @routes.post("/ok")
    async def ok(request: web.Request) -> web.Response:
        holder.received.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    @routes.post("/moved")
    async def moved(_r: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/ok"})

    @routes.post("/chatty")
    async def chatty(_r: web.Request) -> web.Response:
        return web.Response(status=500, text="x" * 100_000)

    @routes.post("/silent")
    async def silent(_r: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    holder.port = runner.addresses[0][1]
    yield holder
    await runner.cleanup()


def allowed(endpoint: Endpoint, tmp_path: Path) -> SafeFetcher:
    f = fetcher(None, tmp_path)
    return SafeFetcher(
        allow=frozenset({("127.0.0.1", endpoint.port)}), limits=f.limits, temp_dir=tmp_path
    )


async def test_a_post_sends_the_body_and_headers_and_reads_the_answer(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    f = allowed(endpoint, tmp_path)
    async with f:
        answer = await f.post(
            f"{endpoint.base}/ok", b'{"a": 1}', {"webhook-id": "msg_1"}, timeout=5
        )
    assert answer.status == 204
    headers, body = endpoint.received[0]
    assert body == b'{"a": 1}'
    assert headers["webhook-id"] == "msg_1"
    assert headers["Content-Type"] == "application/json"


async def test_a_redirect_is_the_answer_not_followed(endpoint: Endpoint, tmp_path: Path) -> None:
    f = allowed(endpoint, tmp_path)
    async with f:
        answer = await f.post(f"{endpoint.base}/moved", b"{}", {}, timeout=5)
    assert answer.status == 302
    assert endpoint.received == []  # /ok was never called


async def test_only_the_start_of_an_answer_is_kept(endpoint: Endpoint, tmp_path: Path) -> None:
    f = allowed(endpoint, tmp_path)
    async with f:
        answer = await f.post(f"{endpoint.base}/chatty", b"{}", {}, timeout=5)
    assert answer.status == 500
    assert len(answer.body) == ANSWER_EXCERPT


async def test_an_endpoint_that_does_not_answer_times_out(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    f = allowed(endpoint, tmp_path)
    async with f:
        started = asyncio.get_running_loop().time()
        with pytest.raises(DownloadTimeout):
            await f.post(f"{endpoint.base}/silent", b"{}", {}, timeout=0.3)
    assert asyncio.get_running_loop().time() - started < 5


async def test_loopback_not_allowed_is_refused_before_any_connection(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    async with fetcher(None, tmp_path) as f:  # nothing allowed
        with pytest.raises(AddressRefused):
            await f.post(f"{endpoint.base}/ok", b"{}", {}, timeout=5)
    assert endpoint.received == []


@pytest.mark.parametrize("address", ["10.0.0.5", "169.254.169.254", "::ffff:192.168.0.1"])
async def test_a_name_that_resolves_to_a_special_address_is_refused(
    tmp_path: Path, address: str
) -> None:
    """Judged from a fake DNS answer: nothing is ever sent to that address."""
    dns = FakeDNS({"hooks.example.com": [address]})
    async with fetcher(None, tmp_path, dns=dns) as f:
        with pytest.raises(AddressRefused):
            await f.post("https://hooks.example.com/in", b"{}", {}, timeout=5)
    assert dns.lookups["hooks.example.com"] >= 1


async def test_a_literal_address_or_port_is_refused_without_a_lookup(tmp_path: Path) -> None:
    dns = FakeDNS({})
    async with fetcher(None, tmp_path, dns=dns) as f:
        with pytest.raises(AddressRefused):
            await f.post("http://169.254.169.254/latest/meta-data", b"{}", {}, timeout=5)
        with pytest.raises(PortRefused):
            await f.post("http://hooks.example.com:22/in", b"{}", {}, timeout=5)
    assert not dns.lookups
