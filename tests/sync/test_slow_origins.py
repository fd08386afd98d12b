"""A slow or silent origin fails its product on time, retried, and the product keeps
its previous images."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from imagesync.kit.settings import Settings
from tests.sync.conftest import ImageServer, images_of, server_settings, sync_images


@pytest.fixture
def settings(database_url: str, tmp_path: Path, image_server: ImageServer) -> Settings:
    return server_settings(
        database_url, tmp_path, image_server, fetch_timeout_seconds=1.0, fetch_retries=1
    )


async def test_a_silent_origin_times_out_and_the_images_stay(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    good = [{"url": image_server.add("front.jpg"), "sort": 1}]
    await sync_images(client, headers, good)
    before = await images_of(client, headers)

    silent = image_server.add("silent.jpg", delay=30)
    start = time.monotonic()
    job = await sync_images(client, headers, [*good, {"url": silent, "sort": 2}])
    elapsed = time.monotonic() - start

    product = job["products"][0]
    assert product["status"] == "failed"
    assert product["images"][1]["error"]["code"] == "timeout"
    assert image_server.hits["silent.jpg"] == 2  # retried once
    # Two attempts of one second, not thirty: the bound leaves room for a busy machine
    # (one CI run took 7.7 s), and still fails if the timeout is not applied.
    assert elapsed < 12
    assert await images_of(client, headers) == before
