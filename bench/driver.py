"""The client: drives a running imagesync over HTTP with the real contract, from its own
process. Sends every image sync request of the catalog over CLIENTS connections at once,
then reads every job until it has finished, as often as its `Retry-After` says; prints
one JSON object. `--repeat` sends the catalog's requests several times over (a no-op
pass long enough to measure).

    python bench/driver.py --base URL --token T --products N --images-base URL --clients 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from datetime import datetime
from typing import Any

import httpx

from bodies import image_bodies
from catalog import build


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    bodies = image_bodies(build(args.products), args.images_base) * args.repeat
    todo: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        todo.put_nowait(body)
    latencies: list[float] = []
    answers: Counter[int] = Counter()
    jobs: list[str] = []
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    headers = {"Authorization": f"Bearer {args.token}"}
    async with httpx.AsyncClient(
        base_url=args.base, headers=headers, limits=limits, timeout=120
    ) as client:

        async def one_client() -> None:
            while not todo.empty():
                body = todo.get_nowait()
                start = time.perf_counter()
                response = await client.post("/products/images/sync", json=body)
                latencies.append(time.perf_counter() - start)
                answers[response.status_code] += 1
                if response.is_success:
                    job = response.json()
                    if job["status"] in ("queued", "running"):
                        jobs.append(job["id"])

        started = time.perf_counter()
        started_at = time.time()
        await asyncio.gather(*(one_client() for _ in range(args.clients)))
        posted = time.perf_counter() - started
        final: Counter[str] = Counter()
        finished_at: list[float] = []

        async def wait_for(job_id: str) -> None:
            """Read the job until it has finished, as often as its `Retry-After` says."""
            while True:
                response = await client.get(f"/products/images/sync/{job_id}")
                read = response.json()
                if read["status"] not in ("queued", "running"):
                    final[read["status"]] += 1
                    finished_at.append(datetime.fromisoformat(read["finished_at"]).timestamp())
                    return
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))

        await asyncio.gather(*(wait_for(job_id) for job_id in jobs))
        # When the last job finished by the server's clock (the same machine's), not when
        # this client next looked.
        finished = max([posted, *(at - started_at for at in finished_at)])
    latencies.sort()
    return {
        "requests": len(bodies),
        "products": sum(len(b["products"]) for b in bodies),
        "images": sum(len(p["images"]) for b in bodies for p in b["products"]),
        "posted_seconds": posted,
        "finished_seconds": finished,
        "answers": {str(k): v for k, v in sorted(answers.items())},
        "jobs_waited_for": len(jobs),
        "waited_jobs_final": dict(final),
        "latency": {
            "p50": latencies[len(latencies) // 2],
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "max": latencies[-1],
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--products", type=int, required=True)
    parser.add_argument("--images-base", required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--repeat", type=int, default=1, help="send the catalog's requests this many times"
    )
    print(json.dumps(asyncio.run(drive(parser.parse_args()))))
