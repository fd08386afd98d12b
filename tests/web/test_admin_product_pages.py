"""A big product's admin page is read and drawn a page at a time: its images (and the
matrix's columns) and its variants (the matrix's rows), in-process."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.kit.settings import Settings
from imagesync.web import pages
from tests.factories import create_account, sync_ok
from tests.sync.conftest import ImageServer, server_settings
from tests.sync.conftest import image_server as image_server  # the fixture, for this module
from tests.web.test_admin_lists import sign_in


@pytest.fixture
def settings(database_url: str, tmp_path: Path, image_server: ImageServer) -> Settings:
    return server_settings(database_url, tmp_path, image_server)


async def test_images_and_variants_are_shown_a_page_at_a_time(
    client: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    image_server: ImageServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pages, "IMAGES_PER_PAGE", 2)
    monkeypatch.setattr(pages, "VARIANTS_PER_PAGE", 3)
    headers = await create_account(sessionmaker)
    variants = [{"sku": f"v-{n}"} for n in range(7)]
    await sync_ok(
        client,
        headers,
        "/products/sync",
        {"products": [{"item_number": "big", "variants": variants}]},
    )
    images = [
        {"url": image_server.add(f"i{n}.jpg"), "sort": n, "alt": f"alt {n}"} for n in range(5)
    ]
    done = await client.post(
        "/products/images/sync?wait=30",
        json={"products": [{"item_number": "big", "images": images}]},
        headers=headers,
    )
    assert done.json()["status"] == "succeeded", done.text
    await sign_in(client, headers["Authorization"].removeprefix("Bearer "))

    first = (await client.get("/admin/products/big")).text
    assert "5 images, 7 variants." in " ".join(first.split())
    assert re.findall(r'alt="(alt \d)"', first) == ["alt 0", "alt 1"]
    assert re.findall(r'<th scope="row">(v-\d)</th>', first) == ["v-0", "v-1", "v-2"]
    assert "Images page 1 of 3" in first
    assert "Variants 1\u20133 of 7" in first

    last = (await client.get("/admin/products/big?page=3&rows=3")).text
    assert re.findall(r'alt="(alt \d)"', last) == ["alt 4"]
    assert re.findall(r'<th scope="row">(v-\d)</th>', last) == ["v-6"]
    assert "Variants 7\u20137 of 7" in last
    # The matrix's columns are the page's images: one column here.
    assert len(re.findall(r'<td class="cell (?:yes|no)">', last)) == 1
    # A page past the end shows the last page of variants, and no images.
    past = (await client.get("/admin/products/big?page=9&rows=9")).text
    assert re.findall(r'<th scope="row">(v-\d)</th>', past) == ["v-6"]
    assert "No images on this page." in past
