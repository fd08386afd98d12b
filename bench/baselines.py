"""The bare baselines the service is measured against, in the same run:

- the bare pipeline: aiohttp fetch, Pillow draft decode and sha256 of the same files, at
  the same download concurrency, in one process;
- the bare diff: one `SELECT ... WHERE item_number IN (...)` per 10 products, compared
  with the request in Python, on the same database engine (plain SQLAlchemy Core).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from collections import defaultdict
from typing import Any

import aiohttp
from PIL import Image
from sqlalchemy import create_engine, text

from catalog import Catalog


def _decode(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (image.width // 8, image.height // 8))
        image.load()
        return image.size


async def bare_pipeline(catalog: Catalog, images_base: str, concurrency: int) -> float:
    """Images per second."""
    slots = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(name: str) -> None:
            async with slots, session.get(f"{images_base}/{name}") as response:
                response.raise_for_status()
                digest = hashlib.sha256()
                chunks = []
                async for chunk in response.content.iter_chunked(256 * 1024):
                    digest.update(chunk)
                    chunks.append(chunk)
                await asyncio.to_thread(_decode, b"".join(chunks))
                digest.hexdigest()

        names = [name for p in catalog.products for name in p.images]
        start = time.perf_counter()
        await asyncio.gather(*(one(name) for name in names))
        return len(names) / (time.perf_counter() - start)


def image_keys(product: dict[str, Any]) -> set[tuple[Any, ...]]:
    """A requested product's images as the bare diff compares them with the rows."""
    return {
        (
            i["url"],
            i.get("existance_key"),
            i["sort"],
            i.get("sort_b2c"),
            i.get("alt"),
            i.get("filename"),
        )
        for i in product["images"]
    }


def bare_diff(database_url: str, bodies: list[dict[str, Any]]) -> float:
    """Products per second: read each request's products' images in one query and tell
    which products changed."""
    engine = create_engine(database_url)
    query = text(
        "SELECT p.item_number, i.url, i.existance_key, i.sort, i.sort_b2c, i.alt, "
        "i.custom_filename FROM image i JOIN product p ON p.id = i.product_id "
        "WHERE p.item_number IN :items"
    ).bindparams(_expanding("items"))
    products = unchanged = 0
    start = time.perf_counter()
    with engine.connect() as conn:
        for body in bodies:
            items = [p["item_number"] for p in body["products"]]
            current: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
            for row in conn.execute(query, {"items": items}):
                current[row[0]].add(tuple(row[1:]))
            for product in body["products"]:
                unchanged += image_keys(product) == current[product["item_number"]]
                products += 1
    elapsed = time.perf_counter() - start
    engine.dispose()
    if unchanged != products:
        raise RuntimeError(f"the bare diff found {products - unchanged} changed products")
    return products / elapsed


def _expanding(name: str) -> Any:
    from sqlalchemy import bindparam

    return bindparam(name, expanding=True)
