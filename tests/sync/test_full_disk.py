"""A full disk, for real: a small tmpfs under the store or under staging of a real
`imagesync serve`. Nothing is downloaded twice, and once there is room again every
product is done.

Before staging had a place of its own, it lived in the store's folder and filled up
with it: every attempt downloaded every new URL again (60 URLs, 300 requests)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.media import samples
from tests.served import clean_env, create_token, serve
from tests.sync.conftest import ImageServer
from tests.waiting import wait_for

pytestmark = pytest.mark.slow


class SmallDisk:
    """A 2 MB tmpfs that can be filled up and emptied again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        with self.filler.open("wb") as handle, contextlib.suppress(OSError):
            while True:  # until "No space left on device"
                handle.write(b"\0" * 65536)
                handle.flush()

    def empty(self) -> None:
        self.filler.unlink(missing_ok=True)


def mount(path: Path) -> Iterator[SmallDisk]:
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(params=["store", "staging"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, SmallDisk]]:
    for found in mount(tmp_path / request.param):
        yield request.param, found


async def test_a_full_disk_costs_no_download_twice_and_nothing_is_lost(
    tmp_path: Path,
    database_env: dict[str, str],
    image_server: ImageServer,
    disk: tuple[str, SmallDisk],
) -> None:
    """Against a real `imagesync serve`, its store or its staging on the small disk."""
    where, small = disk
    env = {
        **clean_env(),
        **database_env,
        "IMAGESYNC_STORAGE_URL": str(tmp_path / "store"),
        "IMAGESYNC_STAGING_DIR": str(tmp_path / "staging"),
        "IMAGESYNC_FETCH_ALLOW": image_server.base.removeprefix("http://"),
        "IMAGESYNC_FETCH_RETRIES": "0",
        "IMAGESYNC_FETCH_MAX_BYTES": "200000",
        "IMAGESYNC_RENDITION_WIDTHS": "",
        "IMAGESYNC_TASK_MAX_ATTEMPTS": "5",
        # Each attempt gives up on the store after 0.3 s: the disk stays full longer.
        "IMAGESYNC_STORE_WAIT_SECONDS": "0.3",
        "IMAGESYNC_RATE_LIMIT": "0",
        "IMAGESYNC_LOG_LEVEL": "warning",
    }
    headers = {"Authorization": f"Bearer {create_token(tmp_path, env)}"}
    names = [f"new-{i}.jpg" for i in range(12)]
    urls = [image_server.add(name, samples.jpeg(300 + i, 200)) for i, name in enumerate(names)]
    items = ["cool-product-001", "cool-product-002", "cool-product-003"]
    products = [
        {"item_number": item, "images": [{"url": u, "sort": j} for j, u in enumerate(urls[i::3])]}
        for i, item in enumerate(items)
    ]
    with serve(tmp_path, env) as base:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
            catalog = {"products": [{"item_number": item} for item in items]}
            created = await client.post("/products/sync", json=catalog)
            assert created.status_code == 200, created.text

            small.fill()
            try:
                response = await client.post("/products/images/sync", json={"products": products})
                assert response.status_code == 202, response.text
                job_id = response.json()["id"]

                async def waiting() -> bool:
                    read = await job(client, job_id)
                    errors = [p.get("error") or {} for p in read["products"]]
                    return all(e.get("code") == "storage_error" for e in errors)

                await wait_for(waiting, 20)
                await asyncio.sleep(3)  # longer than one attempt's waits: attempts are spent
            finally:
                small.empty()

            async def done() -> bool:
                return (await job(client, job_id))["status"] not in ("queued", "running")

            await wait_for(done, 60)
            read = await job(client, job_id)
    assert read["status"] == "succeeded", read
    # A full store: downloaded once each, kept while the store refused them. A full
    # staging disk: refused before asking the origin, fetched once there was room.
    assert {name: image_server.hits[name] for name in names} == dict.fromkeys(names, 1), where
    assert sum(p["counts"]["created"] for p in read["products"]) == 12


async def job(client: httpx.AsyncClient, job_id: str) -> Any:
    response = await client.get(f"/products/images/sync/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()
