"""Input no column can hold is refused at request time with a pointer, the same way on
both databases, and records nothing: integers past 32 bits, text with a NUL character or
a lone surrogate, ids and pages too large for a query."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.kit.db import session_scope
from imagesync.sync.models import SyncJob
from tests.factories import pointers
from tests.sync.conftest import ImageServer, images_of
from tests.sync.conftest import sync_body as sync


def one_image(**fields: Any) -> dict[str, Any]:
    image = {"url": "https://images.example.com/1.jpg", "sort": 1} | fields
    return {"products": [{"item_number": "cool-product-001", "images": [image]}]}


async def jobs_recorded(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    async with session_scope(sessionmaker) as session:
        return int(await session.scalar(select(func.count()).select_from(SyncJob)) or 0)


@pytest.mark.parametrize(
    ("fields", "pointer"),
    [
        ({"sort": 2**70}, "/products/0/images/0/sort"),
        ({"sort": 2**31}, "/products/0/images/0/sort"),
        ({"sort": -(2**31) - 1}, "/products/0/images/0/sort"),
        ({"sort_b2c": 2**31}, "/products/0/images/0/sort_b2c"),
        ({"alt": "front\x00"}, "/products/0/images/0/alt"),
        ({"existance_key": "k\x00"}, "/products/0/images/0/existance_key"),
        ({"filename": "a\x00.jpg"}, "/products/0/images/0/filename"),
        ({"url": "https://images.example.com/\x00.jpg"}, "/products/0/images/0/url"),
        (
            {"attach_to_variants_matching_attribute_code": {"Color": "1\x00"}},
            "/products/0/images/0/attach_to_variants_matching_attribute_code/Color",
        ),
    ],
)
async def test_values_no_column_holds_are_422_with_a_pointer_and_record_nothing(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    sessionmaker: async_sessionmaker[AsyncSession],
    fields: dict[str, Any],
    pointer: str,
) -> None:
    response = await client.post("/products/images/sync", json=one_image(**fields), headers=headers)
    assert response.status_code == 422, response.text
    assert pointers(response) == [pointer]
    assert await jobs_recorded(sessionmaker) == 0


async def test_a_lone_surrogate_is_422(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    # Valid JSON (an escape), but not Unicode text: no database can store it.
    raw = json.dumps(one_image(alt="ALT")).replace("ALT", "\\ud800")
    response = await client.post(
        "/products/images/sync",
        content=raw,
        headers=headers | {"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert pointers(response) == ["/products/0/images/0/alt"]
    assert await jobs_recorded(sessionmaker) == 0


async def test_the_extreme_32_bit_sorts_are_kept_on_both_databases(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    body = {
        "products": [
            {
                "item_number": "cool-product-001",
                "images": [
                    {"url": image_server.add("a.jpg"), "sort": 2**31 - 1, "sort_b2c": -(2**31)},
                    {"url": image_server.add("b.jpg"), "sort": -(2**31)},
                ],
            }
        ]
    }
    job = await sync(client, headers, body)
    assert job["status"] == "succeeded", job
    found = await images_of(client, headers)
    assert [(i["sort"], i["sort_b2c"]) for i in found] == [(-(2**31), None), (2**31 - 1, -(2**31))]


async def test_a_product_name_with_a_nul_is_422(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    body = {"products": [{"item_number": "p-1", "name": "T-shirt\x00"}]}
    response = await client.post("/products/sync", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert pointers(response) == ["/products/0/name"]


@pytest.mark.parametrize(
    "path",
    [
        "/products/images/sync/%00",
        "/products/images/sync/" + "x" * 65,
        "/products/a%00b/images",
        "/products/a%00b",
        "/images/abc/w99999999999999999999/a.jpg",
        "/images/abc/a%00.jpg",
        "/products?page=1180591620717411303424",
    ],
)
async def test_ids_and_pages_no_query_can_take_are_422(
    client: httpx.AsyncClient, headers: dict[str, str], path: str
) -> None:
    response = await client.get(path, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["code"] == "validation_error"


@pytest.mark.parametrize(
    ("url", "code", "words"),
    [
        ("https://user:secret@images.example.com/1.jpg", "validation_error", "credentials"),
        ("https://images.example.com/" + "a" * 2030, "validation_error", "2048"),
        ("https://images.example.com:6379/1.jpg", "port_refused", "port 6379"),
        ("http://[fe80::1%25eth0]/1.jpg", "validation_error", "zone"),
        ("https://images.example.com/a\tb.jpg", "validation_error", "spaces or control"),
        ("https://" + "h" * 64 + ".example.com/1.jpg", "validation_error", "host name is too long"),
    ],
)
async def test_url_checks_that_need_no_network_answer_at_request_time(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    sessionmaker: async_sessionmaker[AsyncSession],
    url: str,
    code: str,
    words: str,
) -> None:
    response = await client.post("/products/images/sync", json=one_image(url=url), headers=headers)
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["source"]["pointer"] == "/products/0/images/0/url"
    assert error["code"] == code
    assert words in error["detail"]
    assert await jobs_recorded(sessionmaker) == 0


async def test_a_url_of_exactly_2048_characters_is_fetched(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    url = image_server.add("long.jpg") + "?pad="
    url += "x" * (2048 - len(url))
    assert len(url) == 2048
    body = {"products": [{"item_number": "cool-product-001", "images": [{"url": url, "sort": 1}]}]}
    job = await sync(client, headers, body)
    assert job["status"] == "succeeded", job
    assert image_server.hits["long.jpg"] == 1


def test_the_documented_url_limit_is_the_enforced_one(settings: Any) -> None:
    from imagesync.app import create_app

    schema = create_app(settings).openapi()["components"]["schemas"]["ImageIn"]
    assert schema["properties"]["url"]["maxLength"] == 2048


@pytest.mark.parametrize("path", ["/products/images/sync", "/products/sync", "/v10/products/sync"])
async def test_reading_a_sync_path_is_405_not_a_missing_product(
    client: httpx.AsyncClient, headers: dict[str, str], path: str
) -> None:
    response = await client.get(path, headers=headers)
    assert response.status_code == 405, response.text
    assert response.headers["Allow"] == "POST"
    error = response.json()["errors"][0]
    assert error["code"] == "method_not_allowed"
    assert "GET is not allowed" in error["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/products/images/sync?wiat=30"),
        ("GET", "/products?page=0&limt=5"),
        ("GET", "/healthz?wiat=1"),
    ],
)
async def test_an_unknown_query_parameter_is_a_422_naming_it(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    sessionmaker: async_sessionmaker[AsyncSession],
    method: str,
    path: str,
) -> None:
    body = {"products": [{"item_number": "cool-product-001", "images": []}]}
    response = await client.request(
        method, path, headers=headers, json=body if method == "POST" else None
    )
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    typo = path.split("&")[-1].split("?")[-1].split("=")[0]
    assert error["source"] == {"parameter": typo}
    assert f"Unknown query parameter {typo!r}" in error["detail"]
    assert await jobs_recorded(sessionmaker) == 0
