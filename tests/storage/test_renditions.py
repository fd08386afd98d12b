"""The renditions task, driven as the queue drives it: made from one decode of the
original, failed with a reason when they cannot be made, left pending for the queue's
retry while the store fails, and failed after the final attempt.

The runner of `serve` is off here, so that each test runs the work itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.kit.db import session_scope
from imagesync.kit.settings import Settings
from imagesync.queue import Attempt
from imagesync.storage.context import Blobs
from imagesync.storage.models import Blob, Rendition
from imagesync.storage.renditions import RenditionsPending, queue_missing, render
from imagesync.storage.store import BlobStore
from imagesync.sync.models import SyncJobProduct
from imagesync.sync.run import product
from tests.media import samples
from tests.sync.conftest import ImageServer, images_of, server_settings


@pytest.fixture
def settings(database_url: str, tmp_path: Path, image_server: ImageServer) -> Settings:
    return server_settings(database_url, tmp_path, image_server, embedded_worker=False)


def attempt(number: int = 1, of: int = 5) -> Attempt:
    return Attempt(number, of, {})


async def synced(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str], url: str
) -> Blob:
    """Sync one image to the T-shirt, running its product as the queue would; its blob."""
    body: dict[str, Any] = {
        "products": [{"item_number": "cool-product-001", "images": [{"url": url, "sort": 1}]}]
    }
    answer = await client.post("/products/images/sync", json=body, headers=headers)
    assert answer.status_code == 202, answer.text
    maker = app.state.sessionmaker
    async with session_scope(maker) as session:
        (seq,) = (
            await session.scalars(
                select(SyncJobProduct.seq).where(SyncJobProduct.job_id == answer.json()["id"])
            )
        ).all()
    await product.run_product(app.state.sync_context, seq, attempt())
    async with session_scope(maker) as session:
        blob: Blob = (await session.scalars(select(Blob))).one()
    return blob


async def states(maker: async_sessionmaker[AsyncSession]) -> list[tuple[int, str]]:
    async with session_scope(maker) as session:
        rows = (await session.scalars(select(Rendition).order_by(Rendition.width))).all()
    return [(r.width, r.state) for r in rows]


async def test_renditions_are_made_once_per_blob(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    blob = await synced(app, client, headers, image_server.add("x.jpg", samples.jpeg(500, 500)))
    assert await states(app.state.sessionmaker) == [(200, "pending"), (400, "pending")]
    await render(app.state.sync_context.blobs, blob.id, attempt())
    assert await states(app.state.sessionmaker) == [(200, "ready"), (400, "ready")]
    await render(app.state.sync_context.blobs, blob.id, attempt())  # run again: nothing to do
    (image,) = await images_of(client, headers)
    assert {r["state"] for r in image["renditions"]} == {"ready"}


async def test_a_rendition_that_cannot_be_made_is_failed_with_a_reason(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    store: BlobStore = app.state.sync_context.store
    blob = await synced(app, client, headers, image_server.add("x.jpg", samples.jpeg(500, 500)))
    # The stored original was damaged after the sync (a disk fault, say).
    damaged = b"\xff\xd8\xff" + b"\x00" * 100
    await store.put_bytes(blob.storage_key, damaged, content_type="image/jpeg")
    await render(app.state.sync_context.blobs, blob.id, attempt())  # not worth a retry
    (image,) = await images_of(client, headers)
    assert [(r["width"], r["state"], r["url"]) for r in image["renditions"]] == [
        (200, "failed", None),
        (400, "failed", None),
    ]
    assert image["renditions"][0]["error"].startswith("corrupt_image")


class FailingWrites:
    """The blob store, refusing every write."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    async def read(self, key: str) -> bytes:
        return await self.store.read(key)

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> None:  # noqa: ARG002
        raise OSError("the disk refuses writes")


async def test_a_store_that_fails_leaves_them_for_the_queue_then_fails_them(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    ctx: Blobs = app.state.sync_context.blobs
    blob = await synced(app, client, headers, image_server.add("x.jpg", samples.jpeg(500, 500)))
    failing = Blobs(
        ctx.sessionmaker,
        FailingWrites(ctx.store),  # type: ignore[arg-type]
        ctx.queue,
        ctx.users,
        media=ctx.media,
        decode_budget=ctx.decode_budget,
    )
    with pytest.raises(RenditionsPending):  # the queue retries it after its backoff
        await render(failing, blob.id, attempt(1, of=2))
    assert await states(ctx.sessionmaker) == [(200, "pending"), (400, "pending")]
    await render(failing, blob.id, attempt(2, of=2))  # the final attempt records the failure
    (image,) = await images_of(client, headers)
    assert {r["state"] for r in image["renditions"]} == {"failed"}
    assert image["renditions"][0]["error"].startswith("storage_error")


async def test_a_width_added_later_is_made_for_existing_images(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    ctx: Blobs = app.state.sync_context.blobs
    blob = await synced(app, client, headers, image_server.add("x.jpg", samples.jpeg(500, 500)))
    await render(ctx, blob.id, attempt())
    ctx.rendition_widths = (200, 300, 400, 800)  # 300 is new; 800 is wider than the image
    assert await queue_missing(ctx) == 1
    assert await queue_missing(ctx) == 0
    await render(ctx, blob.id, attempt())
    (image,) = await images_of(client, headers)
    widths = [(r["width"], r["state"]) for r in image["renditions"]]
    assert (300, "ready") in widths
    assert 800 not in [w for w, _ in widths]
