"""GET /products pages: `page` from 0, `limit` 20 by default, at most 60."""

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.factories import create_account, pointers, sync_ok


@pytest.fixture
async def headers(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, str]:
    return await create_account(sessionmaker)


async def add_products(client: httpx.AsyncClient, headers: dict[str, str], n: int) -> list[str]:
    numbers = [f"p-{i:03d}" for i in range(n)]
    for start in range(0, n, 100):
        await sync_ok(
            client,
            headers,
            "/products/sync",
            {"products": [{"item_number": x} for x in numbers[start : start + 100]]},
        )
    return numbers


async def test_default_page_is_the_first_20(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    numbers = await add_products(client, headers, 45)
    body = (await client.get("/products", headers=headers)).json()
    assert [p["item_number"] for p in body["products"]] == numbers[:20]
    assert body["meta"] == {"page": 0, "limit": 20, "total": 45, "pages": 3}


@pytest.mark.parametrize(
    ("query", "parameter"),
    [("limit=61", "limit"), ("limit=0", "limit"), ("page=-1", "page"), ("page=x", "page")],
)
async def test_out_of_range_parameters_are_422(
    client: httpx.AsyncClient, headers: dict[str, str], query: str, parameter: str
) -> None:
    response = await client.get(f"/products?{query}", headers=headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["source"] == {"parameter": parameter}
    assert pointers(response) == [None]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(limit=st.integers(min_value=1, max_value=60))
async def test_pages_cover_every_product_once_in_order(
    client: httpx.AsyncClient, headers: dict[str, str], limit: int
) -> None:
    total = (await client.get("/products", headers=headers)).json()["meta"]["total"]
    if total == 0:
        await add_products(client, headers, 73)
    seen: list[str] = []
    page = 0
    while True:
        body = (await client.get(f"/products?page={page}&limit={limit}", headers=headers)).json()
        assert body["meta"]["pages"] == -(-73 // limit)
        if not body["products"]:
            break
        assert len(body["products"]) <= limit
        seen += [p["item_number"] for p in body["products"]]
        page += 1
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen)) == 73
    assert page == -(-73 // limit)
