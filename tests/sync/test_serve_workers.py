"""`imagesync serve --workers N` as an operator runs it, on either database: N API
processes on one port and one process of the work beside them, woken at once, counted
together, kept running, and stopped together."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.served import children, create_token, migrated, roles, serve_process
from tests.sync.conftest import ImageServer
from tests.waiting import wait_for

METRICS_TOKEN = "metrics-token-0123456789"


def fetched(metrics: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "imagesync_downloads_total" and sample.labels == {
                "outcome": "fetched"
            }:
                return sample.value
    return 0.0


@pytest.mark.parametrize("workers", [2])
async def test_several_api_processes_and_the_work_beside_them(
    tmp_path: Path, database_env: dict[str, str], image_server: ImageServer, workers: int
) -> None:
    port = image_server.base.rsplit(":", 1)[1]
    env = {
        **migrated(tmp_path, database_env, f"127.0.0.1:{port}"),
        "IMAGESYNC_METRICS_TOKEN": METRICS_TOKEN,
    }
    token = create_token(tmp_path, env)
    auth = {"Authorization": f"Bearer {token}"}
    with serve_process(tmp_path, env, "--workers", str(workers)) as (base, process):

        async def spawned() -> bool:
            return len(roles(process.pid)["api"]) == workers

        await wait_for(spawned, 30)
        found = roles(process.pid)
        assert len(found["work"]) == 1, children(process.pid)
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            # Answers on a kept-alive connection as quick as one process's: with Nagle on
            # (uvicorn's shared socket), each waited 40 ms for the client's delayed ACK.
            answered = []
            for _ in range(21):
                started = time.monotonic()
                assert (await http.get("/healthz")).status_code == 200
                answered.append(time.monotonic() - started)
            assert sorted(answered)[10] < 0.02, answered
            products = [{"item_number": f"p{n}", "variants": []} for n in range(10)]
            answer = await http.post("/products/sync", json={"products": products}, headers=auth)
            assert answer.status_code == 200, answer.text

            async def sync(n: int) -> float:
                """One product's first sync, waited for; the seconds it took."""
                url = image_server.add(f"p{n}.jpg")
                body = {"products": [{"item_number": f"p{n}", "images": [{"url": url, "sort": 1}]}]}
                started = time.monotonic()
                answer = await http.post("/products/images/sync?wait=20", json=body, headers=auth)
                assert answer.status_code == 200, answer.text
                assert answer.json()["status"] == "succeeded", answer.text
                return time.monotonic() - started

            # Downloads run in the work process, woken at once by the API process that
            # recorded the job: not when it next looks (every 2 s), ten times over.
            took = [await sync(n) for n in range(10)]
            assert sum(took) < 5, took
            assert all(image_server.hits[f"p{n}.jpg"] == 1 for n in range(10))
            # Any API process answers every process's counters, the work's downloads too.
            scrape = {"Authorization": f"Bearer {METRICS_TOKEN}"}
            for _ in range(2 * workers):
                metrics = await http.get("/metrics", headers=scrape)
                assert fetched(metrics.text) == 10, metrics.text

            # The work process dies: it is started again, and the work goes on.
            (work,) = found["work"]
            os.kill(work, signal.SIGKILL)

            async def replaced() -> bool:
                return roles(process.pid)["work"] not in ([], [work])

            await wait_for(replaced, 30)
            image_server.add("again.jpg")
            body = {
                "products": [
                    {
                        "item_number": "p0",
                        "images": [{"url": image_server.url("again.jpg"), "sort": 1}],
                    }
                ]
            }
            answer = await http.post("/products/images/sync?wait=20", json=body, headers=auth)
            assert answer.json()["status"] == "succeeded", answer.text
        found = roles(process.pid)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    left = [pid for pid in found["api"] + found["work"] if Path(f"/proc/{pid}").exists()]
    assert not left, left


async def test_a_killed_serve_leaves_no_process_behind(
    tmp_path: Path, database_env: dict[str, str], image_server: ImageServer
) -> None:
    """`serve` killed (SIGKILL: it cannot stop its children) takes its API and work
    processes with it within seconds, instead of leaving them on the port."""
    port = image_server.base.rsplit(":", 1)[1]
    env = migrated(tmp_path, database_env, f"127.0.0.1:{port}")
    with serve_process(tmp_path, env, "--workers", "2") as (_base, process):

        async def spawned() -> bool:
            found = roles(process.pid)
            return len(found["api"]) == 2 and len(found["work"]) == 1

        await wait_for(spawned, 30)
        found = roles(process.pid)
        process.kill()
        process.wait()

        async def gone() -> bool:
            return not [p for p in found["api"] + found["work"] if alive(p)]

        await wait_for(gone, 15)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead and waiting for its parent, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "zombie" not in state
