"""Where files live and when they go: a sync against a real S3-compatible server, and
the collector deleting what no image uses after the grace period, never what a sync
is about to use."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.kit.clock import Clock
from imagesync.kit.db import session_scope, utcnow
from imagesync.kit.settings import Settings
from imagesync.storage.collector import collect, sweep
from imagesync.storage.models import Blob, Rendition
from imagesync.storage.store import BlobStore
from imagesync.sync.models import Image, Source
from imagesync.sync.run.context import SyncContext
from tests.conftest import S3Server
from tests.media import samples
from tests.sync.conftest import ImageServer, images_of, server_settings, sync_images
from tests.waiting import wait_for


@pytest.fixture(params=["local", "s3"])
def settings(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path, image_server: ImageServer
) -> Settings:
    storage: dict[str, Any] = {}
    if request.param == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        storage = {
            "storage_url": f"s3://{s3.new_bucket()}/catalog",
            "s3_endpoint": s3.endpoint,
            "s3_region": s3.options.region,
            "s3_access_key_id": s3.options.access_key_id,
            "s3_secret_access_key": s3.options.secret_access_key,
        }
    return server_settings(
        database_url, tmp_path, image_server, fetch_retries=0, rendition_widths="200", **storage
    )


GRACE = timedelta(days=7)


def picture(n: int) -> bytes:
    return samples.jpeg(300 + n, 200)  # wide enough for a 200 px rendition


async def stored_keys(app: FastAPI) -> set[str]:
    store: BlobStore = app.state.sync_context.store
    return {k for k in await store.keys() if not k.startswith(".tmp")}


async def wait_for_renditions(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    async def none_pending() -> bool:
        async with session_scope(sessionmaker) as session:
            pending = await session.scalar(
                select(func.count()).select_from(Rendition).where(Rendition.state == "pending")
            )
        return not pending

    await wait_for(none_pending, 20, every=0.05)


async def test_files_are_stored_and_served_from_the_configured_store(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    body = picture(1)
    job = await sync_images(client, headers, [{"url": image_server.add("a.jpg", body), "sort": 1}])
    assert job["status"] == "succeeded"
    await wait_for_renditions(app.state.sessionmaker)
    (image,) = await images_of(client, headers)
    served = await client.get(image["file_url"].removeprefix("http://imagesync.test"))
    assert served.status_code == 200
    assert served.content == body
    assert served.headers["content-type"] == "image/jpeg"
    (rendition,) = image["renditions"]
    webp = await client.get(rendition["url"].removeprefix("http://imagesync.test"))
    assert webp.status_code == 200
    assert webp.content[:4] == b"RIFF"
    assert len(await stored_keys(app)) == 2  # the original and its rendition


async def test_unused_files_go_after_the_grace_period_with_their_memory(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: Clock,
) -> None:
    ctx: SyncContext = app.state.sync_context
    a = {"url": image_server.add("a.jpg", picture(1)), "sort": 1}
    b = {"url": image_server.add("b.jpg", picture(2)), "sort": 2}
    await sync_images(client, headers, [a, b])
    await wait_for_renditions(sessionmaker)
    await sync_images(client, headers, [a])  # b is no longer used
    assert len(await stored_keys(app)) == 4

    assert (await collect(ctx.blobs, grace=GRACE)).blobs == 0  # within the grace period
    clock.advance(days=8)
    collected = await collect(ctx.blobs, grace=GRACE)
    assert (collected.blobs, collected.files) == (1, 2)  # b and its rendition

    async with session_scope(sessionmaker) as session:
        assert await session.scalar(select(func.count()).select_from(Source)) == 1
        assert await session.scalar(select(func.count()).select_from(Blob)) == 1
    (image,) = await images_of(client, headers)
    assert len(await stored_keys(app)) == 2
    served = await client.get(image["file_url"].removeprefix("http://imagesync.test"))
    assert served.status_code == 200

    # Sent again, b is downloaded again: its "seen before" memory went with it.
    await sync_images(client, headers, [a, b])
    assert image_server.hits["b.jpg"] == 2
    assert image_server.hits["a.jpg"] == 1


async def test_a_file_a_sync_plans_to_reuse_is_not_collected(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    clock: Clock,
) -> None:
    ctx: SyncContext = app.state.sync_context
    a = {"url": image_server.add("a.jpg", picture(1)), "sort": 1}
    slow = {"url": image_server.add("slow.jpg", picture(2), delay=1.0), "sort": 2}
    await sync_images(client, headers, [a])
    await sync_images(client, headers, [])  # a is unused now
    clock.advance(days=30)

    # a comes back beside a slow new image: the collector runs while it downloads.
    sending = asyncio.create_task(sync_images(client, headers, [a, slow]))
    while image_server.hits["slow.jpg"] == 0:
        await asyncio.sleep(0.01)
    assert (await collect(ctx.blobs, grace=GRACE)).blobs == 0  # the plan touched a
    job = await sending
    assert job["status"] == "succeeded"
    assert image_server.hits["a.jpg"] == 1  # reused, never downloaded again


async def test_a_download_whose_file_the_collector_deleted_meanwhile_is_stored_again(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bytes are stored under their hash: the collector, deleting an old copy of the same
    bytes, can delete a new download's file between its store and its record. Found by
    the test below under load; here the collector's delete lands there every time."""
    store = app.state.sync_context.blobs.store
    put = store.put_file
    raced: list[str] = []

    async def put_then_collected(key: str, path: Path, *, content_type: str) -> None:
        await put(key, path, content_type=content_type)
        if not raced:
            raced.append(key)
            await store.delete([key])

    monkeypatch.setattr(store, "put_file", put_then_collected)
    body = picture(1)
    url = image_server.add("a.jpg", body)
    job = await sync_images(client, headers, [{"url": url, "sort": 1}])
    assert job["status"] == "succeeded", job
    assert raced
    [image] = await images_of(client, headers)
    served = await client.get(image["file_url"].removeprefix("http://imagesync.test"))
    assert served.content == body
    assert image_server.hits["a.jpg"] == 2  # downloaded again once the loss was seen


async def test_a_file_being_collected_is_downloaded_again_never_linked(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    ctx: SyncContext = app.state.sync_context
    body = picture(1)
    a = {"url": image_server.add("a.jpg", body), "sort": 1}
    slow = {"url": image_server.add("slow.jpg", picture(2), delay=1.0), "sort": 2}
    await sync_images(client, headers, [a])
    await sync_images(client, headers, [])

    sending = asyncio.create_task(sync_images(client, headers, [a, slow]))
    while image_server.hits["slow.jpg"] == 0:
        await asyncio.sleep(0.01)
    # The collector starts on a between the plan and the apply (as if it had marked
    # it a moment before the plan's touch).
    async with session_scope(sessionmaker) as session:
        await session.execute(update(Blob).values(collecting_since=utcnow()))
    while image_server.hits["a.jpg"] < 2:  # queued again, and downloaded again
        await asyncio.sleep(0.01)
    await collect(ctx.blobs, grace=GRACE)  # finishes: the old row and file are gone
    job = await sending
    assert job["status"] == "succeeded", job
    images = await images_of(client, headers)
    assert len(images) == 2
    served = await client.get(images[0]["file_url"].removeprefix("http://imagesync.test"))
    assert served.content == body  # stored anew, after the collector deleted the old copy


async def test_every_image_always_has_its_file(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Random syncs and collections (grace zero): no image ever loses its file, and
    nothing is stored that no row knows."""
    ctx: SyncContext = app.state.sync_context
    store: BlobStore = app.state.sync_context.store
    urls = [image_server.add(f"p{i}.jpg", picture(i % 4)) for i in range(6)]  # shared bytes
    rng = random.Random(4)
    for _step in range(12):
        chosen = rng.sample(urls, rng.randint(0, 4))
        job = await sync_images(
            client, headers, [{"url": u, "sort": i} for i, u in enumerate(chosen)]
        )
        assert job["status"] == "succeeded", job
        settled = rng.random() < 0.5
        if settled:
            await wait_for_renditions(sessionmaker)
            await collect(ctx.blobs, grace=timedelta(0))
            # Nothing in flight: every stored file has its row, so a sweep finds nothing.
            assert await sweep(ctx.blobs, older_than=timedelta(0)) == 0
        async with session_scope(sessionmaker) as session:
            blobs = (await session.scalars(select(Blob))).all()
            used = set((await session.scalars(select(Image.blob_id))).all())
            ready = (
                await session.scalars(select(Rendition).where(Rendition.state == "ready"))
            ).all()
        for blob in blobs:
            assert await store.exists(blob.storage_key), blob.sha256
        assert used <= {b.id for b in blobs}
        for rendition in ready:
            assert rendition.storage_key is not None
            assert await store.exists(rendition.storage_key)
        if settled:  # nothing in flight: every stored file belongs to a row, and back
            known = {b.storage_key for b in blobs} | {r.storage_key for r in ready}
            assert await stored_keys(app) == known
            assert len(blobs) == len(used)  # grace zero: nothing unused is left
        assert {i["url"] for i in await images_of(client, headers)} == set(chosen)


async def test_the_grace_period_of_a_deleted_products_files_starts_at_its_deletion(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    clock: Clock,
) -> None:
    ctx: SyncContext = app.state.sync_context
    await sync_images(client, headers, [{"url": image_server.add("a.jpg", picture(1)), "sort": 1}])
    clock.advance(days=30)  # stored long ago
    response = await client.post(
        "/products/sync",
        headers=headers,
        json={"products": [{"item_number": "cool-product-001", "delete": True}]},
    )
    assert response.status_code == 200, response.text
    assert (await collect(ctx.blobs, grace=GRACE)).blobs == 0  # deleted just now
    clock.advance(days=8)
    assert (await collect(ctx.blobs, grace=GRACE)).blobs == 1


async def test_files_no_row_knows_are_swept_once_old_enough(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """What a process that died between storing a file and committing its row left."""
    store: BlobStore = app.state.sync_context.store
    await sync_images(client, headers, [{"url": image_server.add("a.jpg", picture(1)), "sort": 1}])
    await wait_for_renditions(sessionmaker)
    kept = await stored_keys(app)
    await store.put_bytes("ab/cd/" + "ab" * 32, b"orphan", content_type="image/jpeg")

    # Young: it may be about to get its row.
    assert await sweep(app.state.sync_context.blobs, older_than=timedelta(hours=1)) == 0
    assert await stored_keys(app) == kept | {"ab/cd/" + "ab" * 32}

    assert await sweep(app.state.sync_context.blobs, older_than=timedelta(0)) == 1
    assert await stored_keys(app) == kept  # the image's file and rendition stay
    (image,) = await images_of(client, headers)
    served = await client.get(image["file_url"].removeprefix("http://imagesync.test"))
    assert served.status_code == 200
