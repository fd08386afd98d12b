"""The client for file serving: GETs a list of URLs, round and round, over CLIENTS
connections, until REQUESTS answers came; prints one JSON object (requests/s, bytes/s,
latency). With `--revalidate`, each GET names the ETag its URL answered first
(`If-None-Match`), as a cache revalidating its copy does.

    python bench/files.py --clients 8 --requests 2000 URL [URL ...]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections import Counter
from typing import Any

import httpx


async def fetch_all(args: argparse.Namespace) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        etags = {}
        if args.revalidate:
            for url in args.urls:
                etags[url] = (await client.get(url)).headers.get("etag", "")
        urls = itertools.cycle(args.urls)
        left = args.requests
        answers: Counter[int] = Counter()
        latencies: list[float] = []
        received = 0

        async def one_client() -> None:
            nonlocal left, received
            while left > 0:
                left -= 1
                url = next(urls)
                headers = {"If-None-Match": etags[url]} if args.revalidate else {}
                start = time.perf_counter()
                response = await client.get(url, headers=headers)
                latencies.append(time.perf_counter() - start)
                answers[response.status_code] += 1
                received += len(response.content)

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(args.clients)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": args.requests,
        "seconds": elapsed,
        "requests_per_second": args.requests / elapsed,
        "megabytes_per_second": received / elapsed / 1e6,
        "answers": {str(k): v for k, v in sorted(answers.items())},
        "latency": {
            "p50": latencies[len(latencies) // 2],
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--revalidate", action="store_true")
    parser.add_argument("urls", nargs="+")
    print(json.dumps(asyncio.run(fetch_all(parser.parse_args()))))
