"""`imagesync demo`: TRAEDE's documented example, end to end, on this machine.

Serves generated T-shirt pictures on 127.0.0.1, runs the service in-process on a
temporary SQLite database and data folder, sends the documentation's request, shows
which images went to which variants, then sends it again to show nothing is fetched twice.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Column, Table

from imagesync.app import create_app
from imagesync.catalog import auth as catalog_auth
from imagesync.kit.db import migrate_async, session_scope
from imagesync.kit.settings import Settings

COLORS = {"Black": ("100", (20, 20, 20)), "White": ("900", (235, 235, 235))}
SIZES = ["XS", "S", "M", "L", "XL"]
ITEM = "cool-product-001"
# The documentation's request; its host is replaced by the local image server.
EXAMPLE_IMAGES = [
    ("black-product-01.jpg", 1, "A black t-shirt front", "100"),
    ("black-product-02.jpg", 2, "A black t-shirt back", "100"),
    ("white-product-01.jpg", 3, "A white t-shirt front", "900"),
    ("white-product-02.jpg", 4, "A white t-shirt back", "900"),
]


def _picture(color: tuple[int, int, int], label: str) -> bytes:
    image = Image.new("RGB", (480, 600), (200, 210, 220))
    draw = ImageDraw.Draw(image)
    draw.polygon(
        [
            (120, 80),
            (360, 80),
            (440, 180),
            (380, 220),
            (380, 540),
            (100, 540),
            (100, 220),
            (40, 180),
        ],
        fill=color,
    )
    draw.text((20, 570), label, fill=(0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


async def _image_server(hits: Counter[str]) -> tuple[web.AppRunner, str]:
    pictures = {
        name: _picture(COLORS["Black" if code == "100" else "White"][1], name)
        for name, _, _, code in EXAMPLE_IMAGES
    }

    async def serve(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        hits[name] += 1
        if name not in pictures:
            return web.Response(status=404)
        return web.Response(body=pictures[name], content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def _request(base: str) -> dict[str, Any]:
    return {
        "products": [
            {
                "item_number": ITEM,
                "images": [
                    {
                        "url": f"{base}/{name}",
                        "sort": sort,
                        "alt": alt,
                        "attach_to_variants_matching_attribute_code": {"Color": code},
                    }
                    for name, sort, alt, code in EXAMPLE_IMAGES
                ],
            }
        ]
    }


async def _post(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    response = await client.post(path, json=body, headers=headers)
    if response.status_code not in (200, 202):
        raise RuntimeError(f"{path} answered {response.status_code}: {response.text}")
    result: dict[str, Any] = response.json()
    return result


async def run_demo(console: Console, workdir: Path | None = None) -> bool:
    """Run the demo; true when every step behaved as documented."""
    hits: Counter[str] = Counter()
    runner, base = await _image_server(hits)
    with tempfile.TemporaryDirectory(prefix="imagesync-demo-") as tmp:
        folder = workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        settings = Settings(
            database_url=f"sqlite:///{folder / 'imagesync.db'}",
            storage_url=str(folder / "files"),
            fetch_allow=base.removeprefix("http://"),
            log_level="warning",
        )
        where = f"data in {folder}" if workdir else "data in a temporary folder, deleted at the end"
        console.print(f"[bold]imagesync demo[/bold]: {where}; images served at {base}")
        await migrate_async(settings.async_database_url)
        app = create_app(settings)
        try:
            async with app.router.lifespan_context(app):
                async with session_scope(app.state.sessionmaker) as session:
                    issued = await catalog_auth.create_account(session, "demo")
                headers = {"Authorization": f"Bearer {issued.token}"}
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
                    return await _steps(console, client, headers, base, hits)
        finally:
            await runner.cleanup()


async def _images_with_renditions(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> list[dict[str, Any]]:
    """The product's images, once their renditions (made in the background) are done."""
    for _ in range(200):
        response = await client.get(f"/products/{ITEM}/images", headers=headers)
        images: list[dict[str, Any]] = response.json()["images"]
        if all(r["state"] != "pending" for i in images for r in i["renditions"]):
            break
        await asyncio.sleep(0.05)
    return images


async def _steps(
    console: Console,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    base: str,
    hits: Counter[str],
) -> bool:
    await _post(
        client,
        "/attributes/sync",
        {
            "attributes": [
                {
                    "name": "Color",
                    "values": [
                        {"value": color, "code": code} for color, (code, _) in COLORS.items()
                    ],
                }
            ]
        },
        headers,
    )
    await _post(
        client,
        "/products/sync",
        {
            "products": [
                {
                    "item_number": ITEM,
                    "name": "Cool T-shirt",
                    "variants": [
                        {
                            "sku": f"{ITEM}-{code}-{size}",
                            "attributes": {"Color": color, "Size": size},
                        }
                        for color, (code, _) in COLORS.items()
                        for size in SIZES
                    ],
                }
            ]
        },
        headers,
    )
    console.print(
        f"1. T-shirt {ITEM}: Black (code 100) and White (code 900) in sizes "
        f"{'-'.join((SIZES[0], SIZES[-1]))}, 10 variants"
    )

    first = await _post(client, "/products/images/sync?wait=30", _request(base), headers)
    counts = first["products"][0]["counts"]
    console.print(
        f"2. The documentation's request: job {first['status']}, "
        f"{counts['created']} images created, {counts['downloaded']} downloaded"
    )
    images = await _images_with_renditions(client, headers)
    table = Table(
        "sort",
        Column("file and alt text", no_wrap=True),
        Column("attached to variants", no_wrap=True),
        Column("WebP renditions", no_wrap=True),
    )
    for image in images:
        table.add_row(
            str(image["sort"]),
            f"{image['filename']}\n{image['width']}x{image['height']}, {image['size']} B\n"
            f"[italic]{image['alt'] or ''}[/italic]",
            "\n".join(image["variants"]),
            "\n".join(
                f"{r['width']}x{r['height']}, {r['size']} B"
                if r["state"] == "ready"
                else f"{r['width']} px {r['state']}"
                for r in image["renditions"]
            ),
        )
    console.print(table)

    before = sum(hits.values())
    second = await _post(client, "/products/images/sync?wait=30", _request(base), headers)
    again = second["products"][0]["counts"]
    fetched_again = sum(hits.values()) - before
    console.print(
        f"3. The same request again: job {second['status']}, {again['kept']} kept, "
        f"downloaded again: {again['downloaded']} (image server requests: {fetched_again})"
    )
    ok = (
        first["status"] == second["status"] == "succeeded"
        and counts["created"] == 4
        and again["kept"] == 4
        and again["downloaded"] == 0
        and fetched_again == 0
        and all(len(i["variants"]) == 5 for i in images)
        and all(r["state"] == "ready" for i in images for r in i["renditions"])
        and all(len(i["renditions"]) == 2 for i in images)  # 480 px wide: 200 and 400
    )
    console.print(
        "[green]demo passed[/green]" if ok else "[red]demo did not go as documented[/red]"
    )
    return ok
