"""Invariant 7 with real processes: `imagesync serve` killed with its processes (SIGKILL
to the process group, as a crash of the machine or its container kills them) in the
middle of a download loses no job; started again, it finishes the job, and running it twice is
harmless. On SQLite the restarted runner takes the job back as it starts; on PostgreSQL
procrastinate takes it back once the killed worker has been silent for three heartbeats
(a second each here)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from tests.served import clean_env, free_port
from tests.sync.conftest import make_image
from tests.waiting import wait_for


class StallingServer:
    """Serves one JPEG; the first request hangs until released (the download in flight)."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.release = asyncio.Event()
        self.body = make_image((10, 120, 200))

    async def handle(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        if self.hits[request.path] == 1:
            await self.release.wait()
        return web.Response(body=self.body, content_type="image/jpeg")


@pytest.fixture
async def stalling() -> AsyncIterator[tuple[StallingServer, int]]:
    server = StallingServer()
    app = web.Application()
    app.router.add_get("/{name}", server.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield server, runner.addresses[0][1]
    server.release.set()
    await runner.cleanup()


def start_server(
    cwd: Path, port: int, image_port: int, database: dict[str, str]
) -> subprocess.Popen[bytes]:
    env = {
        **clean_env(),
        **database,
        "IMAGESYNC_FETCH_ALLOW": f"127.0.0.1:{image_port}",
        "IMAGESYNC_WORKER_HEARTBEAT_SECONDS": "1",
    }
    with (cwd / f"serve-{port}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "imagesync", "serve", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, to be killed whole
        )


async def test_a_killed_server_takes_the_job_back_after_restart(
    tmp_path: Path, stalling: tuple[StallingServer, int], database_env: dict[str, str]
) -> None:
    server, image_port = stalling
    created = subprocess.run(
        [sys.executable, "-m", "imagesync", "accounts", "create", "acme", "--json"],
        cwd=tmp_path,
        env={**clean_env(), **database_env},
        capture_output=True,
        text=True,
        check=True,
    )
    headers = {"Authorization": f"Bearer {json.loads(created.stdout)['token']}"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_server(tmp_path, port, image_port, database_env)
    try:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:

            async def up() -> bool:
                return (await client.get("/healthz")).status_code == 200

            await wait_for(up)
            response = await client.post(
                "/products/sync",
                json={"products": [{"item_number": "p1", "variants": [{"sku": "p1-a"}]}]},
            )
            assert response.status_code == 200, response.text
            response = await client.post(
                "/products/images/sync",
                json={
                    "products": [
                        {
                            "item_number": "p1",
                            "images": [{"url": f"http://127.0.0.1:{image_port}/a.jpg", "sort": 1}],
                        }
                    ]
                },
            )
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]

            async def downloading() -> bool:
                return server.hits["/a.jpg"] >= 1

            await wait_for(downloading)
            os.killpg(process.pid, signal.SIGKILL)  # while the download is in flight
            process.wait(timeout=10)
            server.release.set()

            process = start_server(tmp_path, port, image_port, database_env)
            await wait_for(up)

            async def finished() -> bool:
                job = (await client.get(f"/products/images/sync/{job_id}")).json()
                return job["status"] not in ("queued", "running")

            await wait_for(finished, seconds=40)
            job = (await client.get(f"/products/images/sync/{job_id}")).json()
            assert job["status"] == "succeeded", job
            images = (await client.get("/products/p1/images")).json()["images"]
            assert len(images) == 1  # rerunning did not duplicate
            assert (await client.get(images[0]["file_url"])).content == server.body
            assert server.hits["/a.jpg"] == 2  # the cut-off download, then the resumed one
    finally:
        process.terminate()
        process.wait(timeout=10)
