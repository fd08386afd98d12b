"""How much cheaper is the nightly re-sync than the first sync?

Runs the service in-process on a temporary SQLite database against a local image
server (127.0.0.1), sends one full push of PRODUCTS x IMAGES images (all downloaded),
then re-sends the identical push ROUNDS times (nothing to download: applied within
the request). Prints both timings and their ratio, measured in the same run.

    .venv/bin/python bench/resync.py [--products 10] [--images 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from PIL import Image

from imagesync.app import create_app
from imagesync.catalog import service as catalog_service
from imagesync.kit.db import migrate_async, session_scope
from imagesync.kit.settings import Settings


def picture(n: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (800, 800), (n * 37 % 255, n * 91 % 255, n * 13 % 255)).save(
        buffer, "JPEG", quality=85
    )
    return buffer.getvalue()


async def main(products: int, images: int, rounds: int) -> None:
    pictures = {
        f"{p}-{i}.jpg": picture(p * images + i) for p in range(products) for i in range(images)
    }

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=pictures[request.match_info["name"]], content_type="image/jpeg")

    server = web.Application()
    server.router.add_get("/{name}", serve)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"127.0.0.1:{runner.addresses[0][1]}"

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            database_url=f"sqlite:///{Path(tmp) / 'db.sqlite'}",
            storage_url=str(Path(tmp) / "files"),
            fetch_allow=base,
            log_level="error",
        )
        await migrate_async(settings.async_database_url)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            async with session_scope(app.state.sessionmaker) as session:
                token = (await catalog_service.create_account(session, "bench")).token
            headers = {"Authorization": f"Bearer {token}"}
            transport = httpx.ASGITransport(app=app)
            client = httpx.AsyncClient(transport=transport, base_url="http://b", timeout=120)
            async with client as c:
                await c.post(
                    "/products/sync",
                    headers=headers,
                    json={
                        "products": [
                            {"item_number": f"p{p}", "variants": [{"sku": f"p{p}-v"}]}
                            for p in range(products)
                        ]
                    },
                )
                body: dict[str, Any] = {
                    "products": [
                        {
                            "item_number": f"p{p}",
                            "images": [
                                {"url": f"http://{base}/{p}-{i}.jpg", "sort": i}
                                for i in range(images)
                            ],
                        }
                        for p in range(products)
                    ]
                }

                async def push() -> tuple[float, dict[str, Any]]:
                    start = time.perf_counter()
                    response = await c.post(
                        "/products/images/sync?wait=60", headers=headers, json=body
                    )
                    elapsed = time.perf_counter() - start
                    job: dict[str, Any] = response.json()
                    if response.status_code != 200 or job["status"] != "succeeded":
                        raise RuntimeError(f"the push did not succeed: {job}")
                    return elapsed, job

                first, job = await push()
                downloaded = sum(p["counts"]["downloaded"] for p in job["products"])
                again = []
                for _ in range(rounds):
                    elapsed, job = await push()
                    if sum(p["counts"]["downloaded"] for p in job["products"]):
                        raise RuntimeError("the re-sync downloaded again")
                    again.append(elapsed)
    await runner.cleanup()

    resync = statistics.median(again)
    total = products * images
    print(f"push of {products} products x {images} images ({total} images, 800x800 JPEG)")
    print(f"  first sync : {first * 1000:8.1f} ms  ({downloaded} downloaded)")
    print(
        f"  re-sync    : {resync * 1000:8.1f} ms  (median of {rounds}, 0 downloaded, "
        f"{resync / total * 1000:.2f} ms per image)"
    )
    print(
        f"  ratio      : re-sync takes {resync / first:.3f} of the first sync "
        f"({first / resync:.1f}x faster)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=10)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.products, args.images, args.rounds))
