"""32 clients at once against a real `imagesync serve` process: every answer is 2xx, and
every acknowledged POST is exactly one recorded job (a POST answers 2xx with its job, or
records nothing). On SQLite (the embedded default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from imagesync.sync.core.planner import identity_of
from imagesync.sync.run.download import FetchDeduper
from imagesync.sync.schemas import ImageError
from tests.served import clean_env, free_port
from tests.sync.conftest import ImageServer
from tests.waiting import wait_for

CLIENTS = 32
PRODUCTS = 10  # per request, TRAEDE's maximum
ROUNDS = 3  # requests per client: a first import, then re-sends


def count_jobs(url: str) -> int:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return int(conn.execute("SELECT count(*) FROM sync_job").fetchone()[0])
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM sync_job").fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
async def served(
    tmp_path: Path, database_env: dict[str, str], image_server: ImageServer
) -> AsyncIterator[tuple[httpx.AsyncClient, subprocess.Popen[bytes]]]:
    env = {
        **clean_env(),
        **database_env,
        "IMAGESYNC_STORAGE_URL": str(tmp_path / "files"),
        "IMAGESYNC_FETCH_ALLOW": image_server.base.removeprefix("http://"),
        "IMAGESYNC_RENDITION_WIDTHS": "",
        "IMAGESYNC_LOG_LEVEL": "warning",
        # One token sends over 600 requests a minute here; the limiter is tested apart.
        "IMAGESYNC_RATE_LIMIT": "0",
    }
    created = subprocess.run(
        [sys.executable, "-m", "imagesync", "accounts", "create", "acme", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    token = json.loads(created.stdout)["token"]
    port = free_port()
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "imagesync", "serve", "--port", str(port), "--no-migrate"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
        limits=limits,
    ) as client:
        try:

            async def up() -> bool:
                return (await client.get("/healthz")).status_code == 200

            await wait_for(up)
            yield client, process
        finally:
            process.terminate()
            process.wait(timeout=20)


async def test_32_clients_at_once_get_only_2xx_and_each_post_is_one_job(
    served: tuple[httpx.AsyncClient, subprocess.Popen[bytes]],
    image_server: ImageServer,
    database_env: dict[str, str],
    tmp_path: Path,
) -> None:
    client, _ = served
    items = [f"c{c}-p{p}" for c in range(CLIENTS) for p in range(PRODUCTS)]
    for start in range(0, len(items), 100):
        response = await client.post(
            "/products/sync",
            json={
                "products": [
                    {"item_number": i, "variants": [{"sku": f"{i}-v"}]}
                    for i in items[start : start + 100]
                ]
            },
        )
        assert response.status_code == 200, response.text
    urls = {i: image_server.add(f"{i}.jpg") for i in items}

    answers: list[int] = []
    jobs: list[str] = []

    async def one_client(c: int) -> None:
        body: dict[str, Any] = {
            "products": [
                {"item_number": i, "images": [{"url": urls[i], "sort": 1}]}
                for i in items[c * PRODUCTS : (c + 1) * PRODUCTS]
            ]
        }
        for _ in range(ROUNDS):
            response = await client.post("/products/images/sync", json=body)
            answers.append(response.status_code)
            if response.is_success:
                jobs.append(response.json()["id"])

    await asyncio.gather(*(one_client(c) for c in range(CLIENTS)))
    failures = [a for a in answers if not 200 <= a < 300]
    assert failures == [], f"{len(failures)} of {len(answers)} answers were not 2xx"
    assert count_jobs(database_env["IMAGESYNC_DATABASE_URL"]) == len(jobs)

    async def all_finished() -> bool:
        for job_id in jobs[-CLIENTS:]:
            found = (await client.get(f"/products/images/sync/{job_id}")).json()
            if found["status"] not in ("succeeded",):
                return False
        return True

    await wait_for(all_finished, 120)
    assert max(image_server.hits.values()) == 1  # each URL downloaded once
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


async def test_a_shared_download_is_cancelled_with_the_last_product_waiting_for_it() -> None:
    """Two products share one download; cutting off the first leaves it running for the
    second, cutting off the second too cancels it: nothing runs on unawaited (after a
    stop, it would write to a closed session)."""
    deduper = FetchDeduper()
    identity = identity_of("https://dam.example/a.jpg", None)
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def download() -> ImageError:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return ImageError(code="timeout", detail="never")

    first = asyncio.create_task(deduper.fetch(1, identity, download))
    second = asyncio.create_task(deduper.fetch(1, identity, download))
    await started.wait()
    first.cancel()
    await asyncio.sleep(0.05)
    assert not cancelled.is_set()
    second.cancel()
    await asyncio.wait_for(cancelled.wait(), 2)
