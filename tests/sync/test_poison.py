"""Poison work ends: a product whose run raises is retried a bounded number of times
with backoff, then ends `failed` / `internal_error`, and its job reaches a final status.
(The procrastinate half, with real worker processes, is in tests/queue/test_scale_out.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.kit.db import session_scope
from imagesync.kit.settings import Settings
from imagesync.queue import backoff
from tests.sync.conftest import (
    POISON_ALT,
    ImageServer,
    images_of,
    poison_trigger,
    server_settings,
    sync_images,
)


@pytest.fixture
def settings(database_url: str, tmp_path: Path, image_server: ImageServer) -> Settings:
    return server_settings(database_url, tmp_path, image_server, task_max_attempts=2)


@pytest.fixture
async def poisoned(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[None]:
    """Every apply of an image with `POISON_ALT` raises, in the database itself."""
    create, drop = poison_trigger(sessionmaker.kw["bind"].dialect.name)
    async with session_scope(sessionmaker) as session:
        for statement in drop + create:
            await session.execute(text(statement))
    yield
    async with session_scope(sessionmaker) as session:
        for statement in drop:
            await session.execute(text(statement))


@pytest.mark.usefixtures("poisoned")
async def test_a_product_that_always_crashes_ends_failed_after_its_attempts(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    assert app.state.settings.task_max_attempts == 2
    good = image_server.add("good.jpg")
    await sync_images(client, headers, [{"url": good, "sort": 1}])

    poison = image_server.add("poison.jpg")
    job = await sync_images(client, headers, [{"url": poison, "sort": 2, "alt": POISON_ALT}])
    assert job["status"] == "failed", job
    (product,) = job["products"]
    assert product["status"] == "failed"
    assert product["error"]["code"] == "internal_error"
    assert product["error"]["detail"].startswith("gave up after 2 attempts")
    assert "\n" not in product["error"]["detail"]
    # Nothing of it was applied; the product keeps its images.
    assert [i["url"] for i in await images_of(client, headers)] == [good]
    # Downloaded once: the second run found the bytes it had already stored.
    assert image_server.hits["poison.jpg"] == 1


def test_retries_back_off_and_are_capped() -> None:
    delays = [backoff(n) for n in range(1, 12)]
    assert delays[:3] == [2, 4, 8]
    assert delays == sorted(delays)
    assert max(delays) == 300
