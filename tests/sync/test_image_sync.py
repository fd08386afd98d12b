"""POST /products/images/sync end to end: real HTTP, real image server, real database."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.catalog.models import Product
from imagesync.sync import repository
from imagesync.sync.core.planner import StoredImage, unchanged
from imagesync.sync.repository import stored_spec
from imagesync.sync.run.apply import spec_of
from imagesync.sync.schemas import ImageIn
from tests.factories import pointers, sync_ok, wait_for_job
from tests.sync.conftest import ImageServer, images_of, make_image
from tests.sync.conftest import sync_body as sync

BLACK = [f"cool-product-001-100-{s}" for s in ("XS", "S", "M", "L", "XL")]
WHITE = [f"cool-product-001-900-{s}" for s in ("XS", "S", "M", "L", "XL")]


def traede_example(server: ImageServer) -> dict[str, Any]:
    """The documentation's example, pointed at the local image server."""
    images = []
    for sort, (name, code, alt) in enumerate(
        [
            ("black-product-01.jpg", "100", "A black t-shirt front"),
            ("black-product-02.jpg", "100", "A black t-shirt back"),
            ("white-product-01.jpg", "900", "A white t-shirt front"),
            ("white-product-02.jpg", "900", "A white t-shirt back"),
        ],
        start=1,
    ):
        url = server.url(name) if name in server.routes else server.add(name)
        images.append(
            {
                "url": url,
                "sort": sort,
                "alt": alt,
                "attach_to_variants_matching_attribute_code": {"Color": code},
            }
        )
    return {"products": [{"item_number": "cool-product-001", "images": images}]}


async def test_traede_example_downloads_stores_and_attaches(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    job = await sync(client, headers, traede_example(image_server))
    assert job["status"] == "succeeded"
    product = job["products"][0]
    assert product["status"] == "succeeded"
    assert product["counts"] == {
        "created": 4,
        "kept": 0,
        "updated": 0,
        "deleted": 0,
        "skipped": 0,
        "failed": 0,
        "downloaded": 4,
        "refreshed": 0,
        "unchanged": 0,
    }
    assert [i["outcome"] for i in product["images"]] == ["created"] * 4

    images = await images_of(client, headers)
    assert [i["sort"] for i in images] == [1, 2, 3, 4]
    assert images[0]["alt"] == "A black t-shirt front"
    assert images[0]["variants"] == sorted(BLACK)
    assert images[3]["variants"] == sorted(WHITE)
    assert images[0]["filename"] == "black-product-01.jpg"
    assert (images[0]["width"], images[0]["height"], images[0]["content_type"]) == (
        64,
        48,
        "image/jpeg",
    )

    served = image_server.routes["black-product-01.jpg"].body
    file = await client.get(images[0]["file_url"])
    assert file.status_code == 200
    assert file.content == served
    assert file.headers["content-type"] == "image/jpeg"
    assert "immutable" in file.headers["cache-control"]
    assert 'filename="black-product-01.jpg"' in file.headers["content-disposition"]

    # A cache revalidating its copy gets a 304, whichever way it names the ETag.
    etag = file.headers["etag"]
    for held in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = await client.get(images[0]["file_url"], headers={"If-None-Match": held})
        assert again.status_code == 304, held
        assert again.content == b""
        assert (again.headers["etag"], again.headers["cache-control"]) == (
            etag,
            file.headers["cache-control"],
        )
    other = await client.get(images[0]["file_url"], headers={"If-None-Match": '"other"'})
    assert other.status_code == 200
    assert other.content == served


async def test_a_wrong_file_name_is_a_404_that_does_not_tell_the_right_one(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    await sync(client, headers, traede_example(image_server))
    image = (await images_of(client, headers))[0]
    right = image["file_url"].removeprefix("http://imagesync.test")
    wrong = right.rsplit("/", 1)[0] + "/guessed.jpg"
    assert (await client.get(right)).status_code == 200
    answer = await client.get(wrong)
    assert answer.status_code == 404
    assert image["filename"] not in answer.text  # was "Image ... is named '<the name>'"
    rendition = f"/images/{image['id']}/w200/guessed.webp"
    answer = await client.get(rendition)
    assert answer.status_code == 404
    assert image["filename"].rsplit(".", 1)[0] not in answer.text


async def test_the_product_shows_its_images_and_each_variant_its_own(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    await sync(client, headers, traede_example(image_server))
    images = await images_of(client, headers)
    product = (await client.get("/products/cool-product-001", headers=headers)).json()
    assert product["images"] == images
    by_sku = {v["sku"]: v["images"] for v in product["variants"]}
    assert by_sku[BLACK[0]] == [images[0]["id"], images[1]["id"]]
    assert by_sku[WHITE[4]] == [images[2]["id"], images[3]["id"]]
    listed = (await client.get("/products", headers=headers)).json()["products"]
    assert listed[0]["images"] == images


async def test_resending_downloads_nothing_and_changes_nothing(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    await sync(client, headers, traede_example(image_server))
    before = await images_of(client, headers)
    hits = sum(image_server.hits.values())

    job = await sync(client, headers, traede_example(image_server))
    counts = job["products"][0]["counts"]
    assert counts["kept"] == 4
    assert counts["downloaded"] == 0
    assert sum(image_server.hits.values()) == hits  # invariant 2: not downloaded again
    assert await images_of(client, headers) == before


async def test_omitted_images_are_deleted_and_kept_ones_take_new_metadata(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    body = traede_example(image_server)
    await sync(client, headers, body)
    images: list[dict[str, Any]] = body["products"][0]["images"]
    images[0].update(sort=9, alt="front, again", sort_b2c=1)
    del images[3]
    job = await sync(client, headers, body)
    assert job["products"][0]["counts"]["updated"] == 1
    assert job["products"][0]["counts"]["deleted"] == 1
    after = await images_of(client, headers)
    assert len(after) == 3
    assert after[-1]["alt"] == "front, again"
    assert after[-1]["sort"] == 9


async def test_existance_key_keeps_the_file_and_takes_the_new_url(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    first = image_server.add("signed-a.jpg")
    second = image_server.add("signed-b.jpg", make_image((1, 2, 3)))
    body = {
        "products": [
            {
                "item_number": "cool-product-001",
                "images": [{"url": first, "sort": 1, "existance_key": "dam-42"}],
            }
        ]
    }
    await sync(client, headers, body)
    sha = (await images_of(client, headers))[0]["sha256"]

    body["products"][0]["images"] = [{"url": second, "sort": 1, "existance_key": "dam-42"}]
    job = await sync(client, headers, body)
    assert job["products"][0]["counts"]["downloaded"] == 0
    assert image_server.hits["signed-b.jpg"] == 0
    image = (await images_of(client, headers))[0]
    assert image["url"] == second
    assert image["sha256"] == sha


async def test_a_url_known_from_another_product_is_not_downloaded(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    url = image_server.add("shared.jpg")
    await sync_ok(client, headers, "/products/sync", {"products": [{"item_number": "other"}]})
    await sync(
        client,
        headers,
        {"products": [{"item_number": "cool-product-001", "images": [{"url": url, "sort": 1}]}]},
    )
    job = await sync(
        client,
        headers,
        {"products": [{"item_number": "other", "images": [{"url": url, "sort": 1}]}]},
    )
    assert job["products"][0]["counts"] == {
        "created": 1,
        "kept": 0,
        "updated": 0,
        "deleted": 0,
        "skipped": 0,
        "failed": 0,
        "downloaded": 0,
        "refreshed": 0,
        "unchanged": 0,
    }
    assert image_server.hits["shared.jpg"] == 1


async def test_a_failed_download_leaves_the_previous_images_untouched(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    body = traede_example(image_server)
    await sync(client, headers, body)
    before = await images_of(client, headers)
    files_before = [(await client.get(i["file_url"])).content for i in before]

    kept: list[dict[str, Any]] = body["products"][0]["images"][:2]
    body["products"][0]["images"] = [*kept, {"url": image_server.url("missing.jpg"), "sort": 5}]
    job = await sync(client, headers, body)
    assert job["status"] == "failed"
    product = job["products"][0]
    assert product["status"] == "failed"
    failed = [i for i in product["images"] if i["outcome"] == "failed"]
    assert failed == [
        {
            "url": image_server.url("missing.jpg"),
            "existance_key": None,
            "outcome": "failed",
            "image_id": None,
            "error": {"code": "download_http_error", "detail": "origin answered 404"},
            "warnings": [],
            "refresh": None,
        }
    ]
    assert image_server.hits["missing.jpg"] == 1  # a 404 is never retried

    after = await images_of(client, headers)
    assert after == before  # invariant 3: rows unchanged
    assert [(await client.get(i["file_url"])).content for i in after] == files_before


async def test_transient_server_errors_are_retried(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    url = image_server.add("flaky.jpg", failures_first=2)
    job = await sync(
        client,
        headers,
        {"products": [{"item_number": "cool-product-001", "images": [{"url": url, "sort": 1}]}]},
    )
    assert job["status"] == "succeeded"
    assert image_server.hits["flaky.jpg"] == 3


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    [
        (b"<html><body>sign in</body></html>", "image/jpeg", "not_an_image"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", "unsupported_format"),
        (make_image((9, 9, 9), (300, 300))[:400], "image/jpeg", "corrupt_image"),
    ],
)
async def test_bytes_that_are_not_a_usable_image_fail_with_a_code(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    body: bytes,
    content_type: str,
    code: str,
) -> None:
    url = image_server.add("bad.jpg", body, content_type=content_type)
    job = await sync(
        client,
        headers,
        {"products": [{"item_number": "cool-product-001", "images": [{"url": url, "sort": 1}]}]},
    )
    assert job["products"][0]["images"][0]["error"]["code"] == code
    assert await images_of(client, headers) == []


async def test_unknown_product_fails_alone(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    url = image_server.add("a.jpg")
    job = await sync(
        client,
        headers,
        {
            "product_images": [
                {"item_number": "no-such-product", "images": [{"url": url, "sort": 1}]},
                {"item_number": "cool-product-001", "images": [{"url": url, "sort": 1}]},
            ]
        },
    )
    assert job["status"] == "partially_failed"
    assert job["products"][0]["status"] == "failed"
    assert job["products"][0]["error"]["code"] == "product_not_found"
    assert job["products"][1]["status"] == "succeeded"


async def test_without_wait_the_job_is_accepted_and_readable(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    response = await client.post(
        "/v10/products/images/sync", json=traede_example(image_server), headers=headers
    )
    assert response.status_code in (200, 202)
    job = response.json()
    assert response.headers["location"].endswith(f"/products/images/sync/{job['id']}")
    read = await wait_for_job(client, headers, job["id"])
    via_location = await client.get(response.headers["location"], headers=headers)
    assert via_location.json() == read
    assert read["status"] == "succeeded"
    assert read["finished_at"] is not None


async def test_variants_added_later_are_attached_by_the_rule(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    await sync(client, headers, traede_example(image_server))
    await sync_ok(
        client,
        headers,
        "/products/sync",
        {
            "products": [
                {
                    "item_number": "cool-product-001",
                    "variants": [
                        {
                            "sku": "cool-product-001-100-XXL",
                            "attributes": {"Color": "Black", "Size": "XXL"},
                        },
                        {
                            "sku": "cool-product-001-100-XS",
                            "attributes": {"Color": "White", "Size": "XS"},
                        },
                    ],
                }
            ]
        },
    )
    images = await images_of(client, headers)
    assert "cool-product-001-100-XXL" in images[0]["variants"]
    assert "cool-product-001-100-XS" not in images[0]["variants"]
    assert "cool-product-001-100-XS" in images[2]["variants"]


async def test_skip_rule_skips_new_images_that_match_no_variant(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    url = image_server.add("red.jpg")
    job = await sync(
        client,
        headers,
        {
            "products": [
                {
                    "item_number": "cool-product-001",
                    "images": [
                        {
                            "url": url,
                            "sort": 1,
                            "attach_to_variants_matching_attribute_code": {"Color": "300"},
                            "skip_if_no_variant_matches_attribute_code": True,
                        }
                    ],
                }
            ]
        },
    )
    assert job["products"][0]["images"][0]["outcome"] == "skipped"
    assert image_server.hits["red.jpg"] == 0
    assert await images_of(client, headers) == []


async def test_b2c_channel_orders_by_sort_b2c(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    a, b, c = (image_server.add(n) for n in ("a.jpg", "b.jpg", "c.jpg"))
    body: dict[str, Any] = {
        "products": [
            {
                "item_number": "cool-product-001",
                "use_sort_b2c": True,
                "images": [
                    {"url": a, "sort": 1, "sort_b2c": 2},
                    {"url": b, "sort": 2},
                    {"url": c, "sort": 3, "sort_b2c": 1},
                ],
            }
        ]
    }
    await sync(client, headers, body)
    assert [i["url"] for i in await images_of(client, headers)] == [a, b, c]
    assert [i["url"] for i in await images_of(client, headers, query="?channel=b2c")] == [c, a, b]

    # The same images with B2C sorting turned off: only the product changes, and it does.
    product = body["products"][0]
    for use_sort_b2c in (False, None):  # then left out: left as it is
        product["use_sort_b2c"] = use_sort_b2c
        job = await sync(client, headers, body)
        assert job["status"] == "succeeded", job
        assert job["products"][0]["counts"]["kept"] == 3
        b2c = await images_of(client, headers, query="?channel=b2c")
        assert [i["url"] for i in b2c] == [a, b, c]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"products": [{"item_number": f"p{i}", "images": []} for i in range(11)]}, ["/products"]),
        ({"products": [], "product_images": []}, ["/products", "/product_images"]),
        (
            {
                "products": [{"item_number": "a", "images": []}],
                "product_images": [{"item_number": "a", "images": []}],
            },
            [""],
        ),
        (
            {"products": [{"item_number": "a", "images": [{"url": "ftp://x/y.jpg", "sort": 1}]}]},
            ["/products/0/images/0/url"],
        ),
        (
            {"products": [{"item_number": "a", "images": [{"url": "/relative.jpg", "sort": 1}]}]},
            ["/products/0/images/0/url"],
        ),
        (
            {"products": [{"item_number": "a", "images": [{"url": "https://x/y.jpg"}]}]},
            ["/products/0/images/0/sort"],
        ),
        (
            {
                "products": [
                    {
                        "item_number": "a",
                        "images": [
                            {"url": "https://x/1.jpg", "sort": 1, "existence_key": "k"},
                            {"url": "https://x/2.jpg", "sort": 2, "existance_key": "k"},
                        ],
                    }
                ]
            },
            ["/products/0/images/1/existance_key"],
        ),
        (
            {
                "products": [
                    {
                        "item_number": "a",
                        "images": [
                            {"url": "https://x/1.jpg", "sort": 1},
                            {"url": "https://x/1.jpg", "sort": 2},
                        ],
                    }
                ]
            },
            ["/products/0/images/1/url"],
        ),
        (
            {"products": [{"item_number": "a", "images": []}, {"item_number": "a", "images": []}]},
            ["/products/1/item_number"],
        ),
    ],
)
async def test_invalid_requests_are_422_and_record_nothing(
    client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any], expected: list[str]
) -> None:
    response = await client.post("/products/images/sync", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert sorted(pointers(response)) == sorted(expected)


async def test_a_body_over_the_limit_is_413(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    huge = {
        "products": [
            {
                "item_number": f"p{p}",
                "images": [
                    {"url": f"https://x/{i}.jpg", "sort": i, "alt": "x" * 1000} for i in range(240)
                ],
            }
            for p in range(10)
        ]
    }
    assert len(httpx.Request("POST", "/", json=huge).content) > 2 * 1024 * 1024
    response = await client.post("/products/images/sync", json=huge, headers=headers)
    assert response.status_code == 413
    assert response.json()["errors"][0]["code"] == "payload_too_large"


async def test_refused_addresses_are_never_connected_to(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """Loopback on a port nobody allow-listed: refused at request time, before any
    connection or name lookup, with a pointer to each image."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        response = await client.post(
            "/products/images/sync",
            json={
                "products": [
                    {
                        "item_number": "cool-product-001",
                        "images": [
                            {"url": f"http://127.0.0.1:{port}/a.jpg", "sort": 1},
                            {"url": f"http://localhost:{port}/b.jpg", "sort": 2},
                        ],
                    }
                ]
            },
            headers=headers,
        )
        assert response.status_code == 422, response.text
        errors = response.json()["errors"]
        # The name is not even resolved: its port is not one images are fetched from.
        assert [(e["code"], e["source"]["pointer"]) for e in errors] == [
            ("address_refused", "/products/0/images/0/url"),
            ("port_refused", "/products/0/images/1/url"),
        ]
        assert "not a public address" in errors[0]["detail"]
        # It says how a local image server is allowed, not what is allowed already.
        assert "allow an exact host:port with IMAGESYNC_FETCH_ALLOW" in errors[0]["detail"]
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected
    finally:
        listener.close()


async def test_a_jobs_downloaded_counts_add_up_to_the_origin_hits(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    # Slow answers: the three products run at once and share the two downloads.
    shared = [image_server.add(f"shared-{i}.jpg", delay=0.5) for i in range(2)]
    for n in range(3):
        await sync_ok(client, headers, "/products/sync", {"products": [{"item_number": f"p{n}"}]})
    body = {
        "products": [
            {
                "item_number": f"p{n}",
                "images": [{"url": u, "sort": i} for i, u in enumerate(shared)],
            }
            for n in range(3)
        ]
    }
    job = await sync(client, headers, body)
    assert job["status"] == "succeeded", job
    assert [image_server.hits[f"shared-{i}.jpg"] for i in range(2)] == [1, 1]
    assert sum(p["counts"]["downloaded"] for p in job["products"]) == 2
    assert all(p["counts"]["created"] == 2 for p in job["products"])


async def test_the_no_op_check_reads_each_image_as_its_plan_would(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """A submission reads the images straight from the rows (`product_states`); planning
    makes specs of them (`stored_spec`). Both must say the same of every field, or an
    unchanged product would be planned (or a changed one kept)."""
    body = traede_example(image_server)
    images = body["products"][0]["images"]
    images[0].update(sort_b2c=3, filename="front.jpg", existance_key="dam-1")
    images[1].update(alt=None)
    del images[2]["attach_to_variants_matching_attribute_code"]
    await sync(client, headers, body)
    async with sessionmaker() as session:
        product = (
            await session.scalars(select(Product).where(Product.item_number == "cool-product-001"))
        ).one()
        states = await repository.product_states(session, product.account_id, ["cool-product-001"])
        rows = await repository.image_rows(session, [product.id])
        links = await repository.image_links(session, [product.id])
    planned = [StoredImage.of(r.id, stored_spec(r), len(links.get(r.id, ()))) for r in rows]
    assert states["cool-product-001"].images == planned
    assert unchanged(planned, [spec_of(ImageIn.model_validate(i)) for i in images]) is not None
