"""Reads under load: how long `/healthz` and a small product's read take while clients
read a big product over and over.

    python bench/reads.py hammer --clients 8 --header 'Authorization: Bearer T' URL
    python bench/reads.py probe --requests 200 --header 'Authorization: Bearer T' URL ...

`hammer` reads URL with that many clients until it is stopped (SIGTERM), then prints
how many reads it finished. `probe` reads each URL `--requests` times in turn, one at a
time, and prints each one's latency percentiles as JSON. Separate processes, so that
the hammer's big bodies never delay the probe's own clock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import time

import httpx


def headers(given: list[str]) -> dict[str, str]:
    return dict(h.split(": ", 1) for h in given)


async def hammer(url: str, clients: int, sent: dict[str, str]) -> int:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    done = 0

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal done
        while not stop.is_set():
            async with client.stream("GET", url, headers=sent) as response:
                async for _ in response.aiter_raw():
                    pass
                response.raise_for_status()
            done += 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        tasks = [asyncio.create_task(one(client)) for _ in range(clients)]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return done


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def probe(urls: list[str], requests: int, sent: dict[str, str]) -> dict[str, dict[str, float]]:
    found = {}
    with httpx.Client(timeout=300) as client:
        for url in urls:
            seconds = []
            for _ in range(requests):
                started = time.perf_counter()
                answer = client.get(url, headers=sent)
                answer.raise_for_status()
                seconds.append(time.perf_counter() - started)
            found[url] = {
                "p50": statistics.median(seconds),
                "p99": percentile(seconds, 0.99),
                "max": max(seconds),
                "bytes": len(answer.content),
            }
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("hammer", "probe"))
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--header", action="append", default=[])
    args = parser.parse_args()
    sent = headers(args.header)
    if args.action == "hammer":
        print(json.dumps({"reads": asyncio.run(hammer(args.urls[0], args.clients, sent))}))
    else:
        print(json.dumps(probe(args.urls, args.requests, sent)))


if __name__ == "__main__":
    main()
