"""Real servers on 127.0.0.1 that misbehave on purpose, a fake DNS, and a tripwire that
records every connection the downloader attempts and stops any that is not loopback."""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import ipaddress
import socket
import ssl
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from imagesync.fetch.downloader import FetchLimits, SafeFetcher
from imagesync.fetch.errors import FetchError
from imagesync.fetch.guard import IPAddress, is_forbidden

JPEG = b"\xff\xd8\xff\xe0" + b"x" * 100


@dataclass
class Origin:
    """An image origin on 127.0.0.1 with one route per kind of misbehaviour."""

    base: str
    port: int
    hits: Counter[str] = field(default_factory=Counter)
    active: int = 0
    peak: int = 0
    encodings: list[str] = field(default_factory=list)
    # The If-None-Match and If-Modified-Since of each GET of /validated.jpg.
    conditions: list[tuple[str | None, str | None]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


def _routes(origin: Origin) -> web.Application:
    app = web.Application()

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        origin.hits[request.path] += 1
        origin.active += 1
        origin.peak = max(origin.peak, origin.active)
        try:
            return await handler(request)  # type: ignore[no-any-return]
        finally:
            origin.active -= 1

    app.middlewares.append(count)
    routes = web.RouteTableDef()

    @routes.get("/ok.jpg")
    async def ok(_r: web.Request) -> web.Response:
        return web.Response(body=JPEG, content_type="image/jpeg")

    @routes.get("/slow.jpg")
    async def slow(_r: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return web.Response(body=JPEG, content_type="image/jpeg")

    @routes.get("/silent")
    async def silent(_r: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    @routes.get("/drip")
    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        await response.prepare(request)
        for _ in range(300):  # one byte every 50 ms: each read is quick, the whole is not
            await response.write(b"x")
            await asyncio.sleep(0.05)
        return response

    @routes.get("/endless")
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        await response.prepare(request)
        chunk = b"\xff" * 65536
        while True:  # no Content-Length, never ends
            await response.write(chunk)

    @routes.get("/huge")
    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(10**9)})
        await response.prepare(request)
        await response.write(b"\xff\xd8\xff")
        await asyncio.sleep(30)  # declared far over the cap; the body never needs reading
        return response

    @routes.get("/short")
    async def short(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b"x" * 10)
        assert request.transport is not None
        request.transport.close()  # the connection drops with 990 bytes missing
        return response

    @routes.get("/redirect")
    async def redirect(request: web.Request) -> web.Response:
        target = request.query.get("to")
        headers = {"Location": target} if target is not None else {}
        return web.Response(status=int(request.query.get("status", "302")), headers=headers)

    @routes.get("/chain/{n}")
    async def chain(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        target = "/ok.jpg" if n == 0 else f"/chain/{n - 1}"
        return web.Response(status=301, headers={"Location": target})

    @routes.get("/loop/{side}")
    async def loop(request: web.Request) -> web.Response:
        other = "b" if request.match_info["side"] == "a" else "a"
        return web.Response(status=307, headers={"Location": f"/loop/{other}"})

    @routes.get("/status/{code}")
    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        headers = {}
        if "retry_after" in request.query:
            headers["Retry-After"] = request.query["retry_after"]
        if "encoding" in request.query:  # an error page compressed as it always is
            headers["Content-Encoding"] = request.query["encoding"]
        return web.Response(status=code, headers=headers)

    @routes.get("/flaky/{code}")
    async def flaky(request: web.Request) -> web.Response:
        # Fails with `code` on the first hit, then serves the image.
        if origin.hits[request.path] == 1:
            headers = {}
            if "retry_after" in request.query:
                headers["Retry-After"] = request.query["retry_after"]
            return web.Response(status=int(request.match_info["code"]), headers=headers)
        return web.Response(body=JPEG, content_type="image/jpeg")

    @routes.get("/validated.jpg")
    async def validated(request: web.Request) -> web.Response:
        # An origin that names its body: a conditional GET that names it gets a 304.
        origin.conditions.append(
            (request.headers.get("If-None-Match"), request.headers.get("If-Modified-Since"))
        )
        validators = {"ETag": '"v1"', "Last-Modified": "Mon, 30 Nov 2026 10:00:00 GMT"}
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers=validators)
        return web.Response(body=JPEG, content_type="image/jpeg", headers=validators)

    @routes.get("/gzip.jpg")
    async def gzip(request: web.Request) -> web.Response:
        import gzip as gz

        origin.encodings.append(request.headers.get("Accept-Encoding", ""))
        return web.Response(
            body=gz.compress(JPEG),
            headers={"Content-Encoding": "gzip", "Content-Type": "image/jpeg"},
        )

    app.add_routes(routes)
    return app


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    holder = Origin(base="", port=0)
    runner = web.AppRunner(_routes(holder), access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    holder.port = runner.addresses[0][1]
    holder.base = f"http://127.0.0.1:{holder.port}"
    yield holder
    await runner.cleanup()


class FakeDNS(AbstractResolver):
    """Answers from a table; a name with a list of answer lists answers each in turn
    (the last one repeats), which is how rebinding looks from here."""

    def __init__(self, table: dict[str, list[str] | list[list[str]]]) -> None:
        self.table = table
        self.lookups: Counter[str] = Counter()

    async def resolve(
        self,
        host: str,
        port: int = 0,
        family: socket.AddressFamily = socket.AF_INET,  # noqa: ARG002
    ) -> list[ResolveResult]:
        self.lookups[host] += 1
        entry = self.table.get(host)
        if entry is None:
            raise OSError(f"fake DNS: no such name {host}")
        if entry and isinstance(entry[0], list):
            turn = min(self.lookups[host], len(entry)) - 1
            answers: list[str] = entry[turn]
        else:
            answers = entry  # type: ignore[assignment]
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for a in answers
        ]

    async def close(self) -> None:
        pass


def fetcher(
    origin: Origin | None,
    tmp_path: Path,
    *,
    dns: FakeDNS | None = None,
    forbidden: Any = is_forbidden,
    proxy: str | None = None,
    tls: ssl.SSLContext | None = None,
    **limits: Any,
) -> SafeFetcher:
    defaults: dict[str, Any] = {"retries": 0, "backoff_base": 0.01}
    allow = frozenset({("127.0.0.1", origin.port)}) if origin is not None else frozenset()
    return SafeFetcher(
        allow=allow,
        limits=FetchLimits(**{**defaults, **limits}),
        temp_dir=tmp_path,
        resolver=dns or FakeDNS({}),
        forbidden=forbidden,
        proxy=proxy,
        tls=tls,
    )


PUBLIC_STAND_IN = "127.0.0.2"


def public_fetcher(
    tmp_path: Path, port: int, names: list[str], **options: Any
) -> tuple[SafeFetcher, FakeDNS]:
    """A fetcher to which `names` resolve to 127.0.0.2, standing in for a public server
    (still this machine), with `port` among the allowed ports."""
    dns = FakeDNS({name: [PUBLIC_STAND_IN] for name in names})
    f = fetcher(
        None,
        tmp_path,
        dns=dns,
        forbidden=treat_as_public(PUBLIC_STAND_IN),
        ports=frozenset({port}),
        **options,
    )
    return f, dns


async def failure(f: SafeFetcher, url: str) -> FetchError:
    async with f:
        with pytest.raises(FetchError) as caught:
            await f.fetch(url)
    return caught.value


def treat_as_public(*addresses: str) -> Any:
    """An address policy for tests: these loopback addresses stand in for public ones,
    so a "public" answer still leads only to this machine."""
    public = {ipaddress.ip_address(a) for a in addresses}

    def forbidden(address: IPAddress) -> bool:
        return address not in public and is_forbidden(address)

    return forbidden
