"""`?dry_run=true`: the plan a sync would carry out, with nothing downloaded, recorded or
changed; the sync that follows does what the plan said."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.kit.db import session_scope
from imagesync.sync.models import Image, ImageVariant, Source, SyncJob
from tests.factories import create_tshirt
from tests.sync.conftest import ImageServer, images_of, sync_body, sync_images

BLACK = [f"cool-product-001-100-{size}" for size in ("L", "M", "S", "XL", "XS")]
WHITE = [f"cool-product-001-900-{size}" for size in ("L", "M", "S", "XL", "XS")]


async def snapshot(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with session_scope(sessionmaker) as session:
        return {
            model.__name__: int(await session.scalar(select(func.count()).select_from(model)) or 0)
            for model in (Image, ImageVariant, Source, SyncJob)
        }


async def dry_run(
    client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]
) -> httpx.Response:
    return await client.post("/products/images/sync?dry_run=true", json=body, headers=headers)


async def test_the_plan_says_what_a_sync_would_do_and_changes_nothing(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    black, white, old = (image_server.add(f"{n}.jpg") for n in ("black", "white", "old"))
    elsewhere = image_server.add("elsewhere.jpg")  # known to the account, from another product
    new = image_server.add("new.jpg")
    rule_black = {"Color": "100"}
    await sync_images(
        client,
        headers,
        [
            {"url": black, "sort": 1, "attach_to_variants_matching_attribute_code": rule_black},
            {"url": white, "sort": 2, "alt": "White"},
            {"url": old, "sort": 3},
        ],
    )
    await create_tshirt(client, headers, "other-product")
    await sync_images(client, headers, [{"url": elsewhere, "sort": 1}], item="other-product")
    body: dict[str, Any] = {
        "products": [
            {
                "item_number": "cool-product-001",
                "images": [
                    {
                        "url": black,
                        "sort": 1,
                        "attach_to_variants_matching_attribute_code": rule_black,
                    },
                    {
                        "url": white,
                        "sort": 2,
                        "alt": "White, front",
                        "attach_to_variants_matching_attribute_code": {"Color": "900"},
                    },
                    {"url": new, "sort": 3},
                    {"url": elsewhere, "sort": 4},
                    {
                        "url": image_server.url("never.jpg"),
                        "sort": 5,
                        "attach_to_variants_matching_attribute_code": {"Color": "555"},
                        "skip_if_no_variant_matches_attribute_code": True,
                    },
                ],
            },
            {"item_number": "no-such-product", "images": []},
        ]
    }
    before, hits, images_before = (
        await snapshot(sessionmaker),
        sum(image_server.hits.values()),
        (await images_of(client, headers)),
    )

    response = await dry_run(client, headers, body)

    assert response.status_code == 200, response.text
    plan = response.json()
    assert plan["dry_run"] is True
    product, missing = plan["products"]
    assert [(i["action"], i["download"], i["variants"]) for i in product["images"]] == [
        ("keep", False, BLACK),
        ("update", False, WHITE),
        ("create", True, []),
        ("create", False, []),  # the account has its bytes: no download
        ("skip", False, []),
    ]
    assert [i["url"] for i in product["images"]] == [
        i["url"] for i in body["products"][0]["images"]
    ]
    assert product["images"][0]["image_id"] == images_before[0]["id"]
    assert product["deletes"] == [
        {"image_id": images_before[2]["id"], "url": old, "existance_key": None}
    ]
    assert product["counts"] == {
        "create": 2,
        "keep": 1,
        "update": 1,
        "delete": 1,
        "skip": 1,
        "download": 1,
        "refresh": 0,
    }
    assert (product["status"], product["pending"]) == ("planned", False)
    assert missing["status"] == "failed"
    assert missing["error"]["code"] == "product_not_found"
    # Nothing downloaded, recorded or changed.
    assert sum(image_server.hits.values()) == hits
    assert await snapshot(sessionmaker) == before
    assert await images_of(client, headers) == images_before

    # The sync that follows does what the plan said.
    job = await sync_body(client, headers, body)
    counts = job["products"][0]["counts"]
    assert (counts["created"], counts["kept"], counts["updated"]) == (2, 1, 1)
    assert (counts["deleted"], counts["skipped"], counts["downloaded"]) == (1, 1, 1)
    assert [i["outcome"] for i in job["products"][0]["images"]] == [
        "kept",
        "updated",
        "created",
        "created",
        "skipped",
    ]


async def test_a_dry_run_is_validated_as_a_sync_is(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    image = {"url": "https://cdn.test/a.jpg", "sort": 1}
    body = {"products": [{"item_number": "cool-product-001", "images": [image, image]}]}
    for path in ("/products/images/sync?dry_run=true", "/products/images/sync"):
        response = await client.post(path, json=body, headers=headers)
        assert response.status_code == 422
        assert response.json()["errors"][0]["code"] == "duplicate_image"
    assert (await snapshot(sessionmaker))["SyncJob"] == 0


async def test_a_product_with_a_pending_sync_is_planned_against_its_images_now(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
) -> None:
    slow = image_server.add("slow.jpg", delay=2.0)
    body = {"products": [{"item_number": "cool-product-001", "images": [{"url": slow, "sort": 1}]}]}
    queued = await client.post("/products/images/sync", json=body, headers=headers)
    assert queued.status_code == 202
    [product] = (await dry_run(client, headers, body)).json()["products"]
    assert product["pending"] is True
    assert product["images"][0]["action"] == "create"
