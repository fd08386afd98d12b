"""No account can hold up another: while account B's products wait on an origin that
takes half a minute, account A's one-image sync is done within seconds.

Before fair shares, B's five products took all four of the process's product slots,
and A's sync waited for one of them to finish (118 s behind an origin sending a byte
a second). Now an account runs at most `IMAGESYNC_ACCOUNT_MAX_PRODUCTS` products at
once, turns go round the accounts that have work waiting, and downloads are capped per
account and per (account, origin host).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.kit.settings import Settings
from tests.factories import create_account, sync_ok
from tests.sync.conftest import ImageServer, server_settings

SLOW = 30.0  # seconds B's origin takes to answer: longer than the test


@pytest.fixture
def settings(database_url: str, tmp_path: Path, image_server: ImageServer) -> Settings:
    return server_settings(
        database_url,
        tmp_path,
        image_server,
        worker_concurrency=4,
        account_max_products=3,
        rendition_widths="",
    )


def slow_products(image_server: ImageServer, count: int) -> list[dict[str, Any]]:
    """`count` products of three images each, every one from the slow origin."""
    return [
        {
            "item_number": f"b-{n}",
            "images": [
                {"url": image_server.add(f"b-{n}-{i}.jpg", delay=SLOW), "sort": i} for i in range(3)
            ],
        }
        for n in range(count)
    ]


async def test_a_slow_origin_of_one_account_does_not_hold_up_another(
    client: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    image_server: ImageServer,
) -> None:
    a = await create_account(sessionmaker, "a")
    b = await create_account(sessionmaker, "b")
    await sync_ok(client, a, "/products/sync", {"products": [{"item_number": "a-1"}]})
    items = [{"item_number": f"b-{n}"} for n in range(5)]
    await sync_ok(client, b, "/products/sync", {"products": items})

    waiting = await client.post(
        "/products/images/sync", json={"products": slow_products(image_server, 5)}, headers=b
    )
    assert waiting.status_code == 202, waiting.text
    await asyncio.sleep(1.0)  # B's products have taken what they may
    read = await client.get(f"/products/images/sync/{waiting.json()['id']}", headers=b)
    statuses = sorted(p["status"] for p in read.json()["products"])
    assert statuses == ["queued", "queued", "running", "running", "running"]

    start = time.monotonic()
    mine = {"item_number": "a-1", "images": [{"url": image_server.add("a-1.jpg"), "sort": 1}]}
    answer = await client.post(
        "/products/images/sync?wait=10", json={"products": [mine]}, headers=a
    )
    elapsed = time.monotonic() - start
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "succeeded"
    assert elapsed < 3, f"A waited {elapsed:.1f} s behind B"
