"""A product's images are read a page at a time (TRAEDE's `page` and `limit`), in the
order of their channel, and a page reads only its own images' rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from imagesync.client import AsyncClient
from imagesync.kit.settings import Settings
from tests.sync.conftest import ImageServer, server_settings

ITEM = "cool-product-001"


@pytest.fixture
def settings(database_url: str, tmp_path: Path, image_server: ImageServer) -> Settings:
    # More images than the client's page of 60.
    return server_settings(database_url, tmp_path, image_server, max_images_per_product=70)


async def make_images(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer, n: int
) -> list[dict[str, Any]]:
    """`n` images whose B2C order is the reverse of their B2B order, synced."""
    sent = [{"url": image_server.add(f"p{i}.jpg"), "sort": i, "sort_b2c": n - i} for i in range(n)]
    body = {"products": [{"item_number": ITEM, "use_sort_b2c": True, "images": sent}]}
    answer = await client.post("/products/images/sync?wait=30", json=body, headers=headers)
    assert answer.json()["status"] == "succeeded", answer.text
    return sent


async def pages(
    client: httpx.AsyncClient, headers: dict[str, str], limit: int, channel: str = "b2b"
) -> tuple[list[str], list[dict[str, Any]]]:
    urls: list[str] = []
    metas = []
    page = 0
    while True:
        answer = await client.get(
            f"/products/{ITEM}/images",
            params={"page": page, "limit": limit, "channel": channel},
            headers=headers,
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert len(body["images"]) <= limit
        urls += [i["url"] for i in body["images"]]
        metas.append(body["meta"])
        page += 1
        if page >= body["meta"]["pages"]:
            return urls, metas


async def test_pages_cover_every_image_once_in_each_channels_order(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    sent = await make_images(client, headers, image_server, 25)
    b2b, metas = await pages(client, headers, 7)
    assert b2b == [i["url"] for i in sent]
    assert [m["page"] for m in metas] == [0, 1, 2, 3]
    assert {(m["total"], m["pages"], m["limit"]) for m in metas} == {(25, 4, 7)}
    b2c, _ = await pages(client, headers, 10, "b2c")
    assert b2c == [i["url"] for i in reversed(sent)]
    # The default page is TRAEDE's: the first 20.
    first = await client.get(f"/products/{ITEM}/images", headers=headers)
    assert [i["url"] for i in first.json()["images"]] == [i["url"] for i in sent[:20]]
    assert first.json()["meta"] == {"page": 0, "limit": 20, "total": 25, "pages": 2}


async def test_a_limit_above_60_or_a_page_past_the_end(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    await make_images(client, headers, image_server, 3)
    over = await client.get(f"/products/{ITEM}/images?limit=61", headers=headers)
    assert over.status_code == 422
    assert over.json()["errors"][0]["source"] == {"parameter": "limit"}
    past = await client.get(f"/products/{ITEM}/images?page=5", headers=headers)
    assert past.status_code == 200
    assert past.json()["images"] == []
    assert past.json()["meta"]["total"] == 3


async def test_the_client_reads_every_page(
    app: Any, headers: dict[str, str], image_server: ImageServer
) -> None:
    """`imagesync.client`'s `product_images` gives all of a product's images."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as raw:
        sent = await make_images(raw, headers, image_server, 65)
    token = headers["Authorization"].removeprefix("Bearer ")
    async with AsyncClient("http://t", token, transport=transport) as api:
        found = await api.product_images(ITEM)
        b2c = await api.product_images(ITEM, channel="b2c")
    assert [i.url for i in found.images] == [i["url"] for i in sent]
    assert [i.url for i in b2c.images] == [i["url"] for i in reversed(sent)]
    assert found.meta.total == 65


@examples(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(limit=st.integers(min_value=1, max_value=60))
def test_any_limit_pages_through_in_order(limit: int) -> None:
    """Pure page arithmetic: every index lands on exactly one page, in order."""
    from imagesync.kit.pagination import PageParams

    total = 137
    seen = []
    page = 0
    while page < PageParams(page=0, limit=limit).meta(total).pages:
        params = PageParams(page=page, limit=limit)
        seen += list(range(total))[params.offset : params.offset + limit]
        page += 1
    assert seen == list(range(total))
