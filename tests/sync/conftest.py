"""A real HTTP image server on 127.0.0.1 that counts its hits, and settings that allow
the service to fetch from it (and from nothing else private)."""

from __future__ import annotations

import asyncio
import email.utils
import io
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.kit.settings import Settings
from tests.factories import create_account, create_tshirt


def make_image(
    color: tuple[int, int, int], size: tuple[int, int] = (64, 48), fmt: str = "JPEG"
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


MAX_BYTES = 100_000  # small limits, so tests can cross them cheaply
MAX_DECODED_MB = 64
MAX_IMAGES = 30


@dataclass
class Route:
    body: bytes = field(repr=False)  # a report that names the server stays short
    status: int = 200
    content_type: str = "image/jpeg"
    failures_first: int = 0  # answer 500 this many times before succeeding
    chunked: bool = False  # stream without Content-Length
    delay: float = 0.0  # seconds before answering
    location: str | None = None  # a redirect's target
    etag: str | None = None  # sent, and a conditional GET naming it is answered 304
    last_modified: str | None = None  # likewise, for If-Modified-Since


@dataclass
class ImageServer:
    base: str = ""
    routes: dict[str, Route] = field(default_factory=dict, repr=False)
    hits: Counter[str] = field(default_factory=Counter)
    # Each conditional GET: the path, its If-None-Match and If-Modified-Since.
    conditional: list[tuple[str, str | None, str | None]] = field(default_factory=list, repr=False)
    not_modified: Counter[str] = field(default_factory=Counter)  # 304s answered, by path

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    def add(
        self,
        path: str,
        body: bytes | None = None,
        *,
        status: int = 200,
        content_type: str = "image/jpeg",
        failures_first: int = 0,
        chunked: bool = False,
        delay: float = 0.0,
        location: str | None = None,
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> str:
        if body is None:  # a distinct picture per path
            body = make_image((len(path) * 40 % 255, sum(path.encode()) % 255, 160))
        self.routes[path] = Route(
            body,
            status,
            content_type,
            failures_first,
            chunked,
            delay,
            location,
            etag,
            last_modified,
        )
        return self.url(path)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.hits[path] += 1
        route = self.routes.get(path)
        if route is None:
            return web.Response(status=404, text="not here")
        if route.delay:
            await asyncio.sleep(route.delay)
        if route.location is not None:
            return web.Response(status=route.status, headers={"Location": route.location})
        if route.failures_first >= self.hits[path]:
            return web.Response(status=500, text="try again")
        validators = {
            k: v for k, v in (("ETag", route.etag), ("Last-Modified", route.last_modified)) if v
        }
        if_none_match = request.headers.get("If-None-Match")
        if_modified_since = request.headers.get("If-Modified-Since")
        if if_none_match or if_modified_since:
            self.conditional.append((path, if_none_match, if_modified_since))
            # RFC 9110 13.2.2: If-None-Match decides when sent; else If-Modified-Since.
            if if_none_match is not None:
                same = route.etag is not None and route.etag in if_none_match.split(", ")
            else:
                same = _not_after(route.last_modified, if_modified_since)
            if same and route.status == 200:
                self.not_modified[path] += 1
                return web.Response(status=304, headers=validators)
        if route.chunked:
            response = web.StreamResponse(status=route.status)
            response.content_type = route.content_type
            response.enable_chunked_encoding()
            await response.prepare(request)
            for start in range(0, len(route.body), 16384):
                await response.write(route.body[start : start + 16384])
            await response.write_eof()
            return response
        return web.Response(
            status=route.status,
            body=route.body,
            content_type=route.content_type,
            headers=validators,
        )


def _not_after(modified: str | None, since: str | None) -> bool:
    """Whether the body's `Last-Modified` is no later than `If-Modified-Since`."""
    if not modified or not since:
        return False
    return email.utils.parsedate_to_datetime(modified) <= email.utils.parsedate_to_datetime(since)


@pytest.fixture
async def image_server() -> AsyncIterator[ImageServer]:
    server = ImageServer()
    app = web.Application()
    app.router.add_get("/{path:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.base = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


@pytest.fixture
def settings(database_url: str, tmp_path: Path, image_server: ImageServer) -> Settings:
    return server_settings(
        database_url,
        tmp_path,
        image_server,
        fetch_retries=2,
        fetch_max_bytes=MAX_BYTES,
        max_images_per_product=MAX_IMAGES,
        max_decoded_mb=MAX_DECODED_MB,
    )


def server_settings(
    database_url: str, tmp_path: Path, image_server: ImageServer, **overrides: Any
) -> Settings:
    """Settings that may fetch from the test image server (and nothing else private),
    retrying quickly; `overrides` replace any of them."""
    port = image_server.base.rsplit(":", 1)[1]
    values: dict[str, Any] = {
        "database_url": database_url,
        "storage_url": str(tmp_path / "files"),
        "fetch_allow": f"127.0.0.1:{port}",
        "fetch_retry_base_seconds": 0.01,
        # A test's app stops at once, cutting off what still runs (as a crash would).
        "worker_shutdown_grace_seconds": 0.5,
    }
    return Settings(**{**values, **overrides})


@pytest.fixture
async def headers(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> dict[str, str]:
    """An account with TRAEDE's example T-shirt; its Authorization header."""
    headers = await create_account(sessionmaker)
    await create_tshirt(client, headers)
    return headers


async def sync_images(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    images: list[dict[str, Any]],
    item: str = "cool-product-001",
) -> dict[str, Any]:
    """Sync one product's images and wait for the finished job."""
    return await sync_body(client, headers, {"products": [{"item_number": item, "images": images}]})


async def sync_body(
    client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any], expect: int = 200
) -> dict[str, Any]:
    """POST an image sync request, wait for the finished job, and expect `expect`."""
    response = await client.post("/products/images/sync?wait=30", json=body, headers=headers)
    assert response.status_code == expect, response.text
    result: dict[str, Any] = response.json()
    return result


async def images_of(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    item: str = "cool-product-001",
    query: str = "",
) -> list[dict[str, Any]]:
    response = await client.get(f"/products/{item}/images{query}", headers=headers)
    assert response.status_code == 200, response.text
    images: list[dict[str, Any]] = response.json()["images"]
    return images


# An image the database itself refuses at apply time, whoever applies it: real poison
# work, reaching worker processes no mock can. See `poison_trigger`.
POISON_ALT = "refused by the database"


def poison_trigger(dialect: str) -> tuple[list[str], list[str]]:
    """SQL that makes the database refuse every image row whose alt is `POISON_ALT`, and
    SQL that removes it again."""
    if dialect == "postgresql":
        return (
            [
                "CREATE OR REPLACE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql "
                "AS $$ BEGIN RAISE EXCEPTION 'the database refuses this image'; END $$",
                "CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON image FOR EACH ROW "
                f"WHEN (NEW.alt = '{POISON_ALT}') EXECUTE FUNCTION refuse_poison()",
            ],
            [
                "DROP TRIGGER IF EXISTS refuse_poison ON image",
                "DROP FUNCTION IF EXISTS refuse_poison()",
            ],
        )
    return (
        [
            f"CREATE TRIGGER refuse_poison BEFORE INSERT ON image WHEN NEW.alt = '{POISON_ALT}' "
            "BEGIN SELECT RAISE(ABORT, 'the database refuses this image'); END"
        ],
        ["DROP TRIGGER IF EXISTS refuse_poison"],
    )
