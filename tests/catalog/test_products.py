"""POST /products/sync, GET /products and GET /products/{item_number}."""

from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.factories import create_account, create_tshirt, pointers, sync_ok


@pytest.fixture
async def headers(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, str]:
    return await create_account(sessionmaker)


async def get_product(
    client: httpx.AsyncClient, headers: dict[str, str], item_number: str
) -> dict[str, Any]:
    response = await client.get(f"/products/{item_number}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_tshirt_example_is_created_with_codes(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    result = await create_tshirt(client, headers)
    assert result["counts"]["products"]["created"] == 1
    assert result["counts"]["variants"]["created"] == 10

    product = await get_product(client, headers, "cool-product-001")
    assert product["name"] == "Cool T-shirt"
    assert product["use_sort_b2c"] is False
    by_sku = {v["sku"]: v["attributes"] for v in product["variants"]}
    assert by_sku["cool-product-001-900-XL"] == {
        "Color": {"value": "White", "code": "900"},
        "Size": {"value": "XL", "code": None},  # created on the fly, without a code
    }


async def test_resending_the_same_products_changes_nothing(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    await create_tshirt(client, headers)
    before = await get_product(client, headers, "cool-product-001")
    again = await create_tshirt(client, headers)
    assert again["counts"]["products"] == {
        "created": 0,
        "updated": 0,
        "unchanged": 1,
        "deleted": 0,
        "not_found": 0,
    }
    assert again["counts"]["variants"]["unchanged"] == 10
    assert await get_product(client, headers, "cool-product-001") == before


async def test_updates_names_and_variant_attributes(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    await create_tshirt(client, headers)
    result = await sync_ok(
        client,
        headers,
        "/products/sync",
        {
            "products": [
                {
                    "item_number": "cool-product-001",
                    "name": "Cooler T-shirt",
                    "variants": [
                        {
                            "sku": "cool-product-001-100-XS",
                            "attributes": {"Color": "White", "Size": "XS"},
                        },
                        {"sku": "cool-product-001-100-S", "attributes": {"Color": "Black"}},
                        {"sku": "cool-product-001-100-M"},
                    ],
                }
            ]
        },
    )
    assert result["products"][0]["result"] == "updated"
    assert [v["result"] for v in result["products"][0]["variants"]] == [
        "updated",
        "updated",
        "unchanged",
    ]
    product = await get_product(client, headers, "cool-product-001")
    by_sku = {v["sku"]: v["attributes"] for v in product["variants"]}
    assert by_sku["cool-product-001-100-XS"]["Color"]["code"] == "900"
    assert set(by_sku["cool-product-001-100-S"]) == {"Color"}  # Size removed
    assert set(by_sku["cool-product-001-100-M"]) == {"Color", "Size"}  # untouched
    assert product["name"] == "Cooler T-shirt"
    assert len(product["variants"]) == 10


async def test_absent_name_leaves_it_and_null_clears_it(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    await create_tshirt(client, headers)
    await sync_ok(
        client, headers, "/products/sync", {"products": [{"item_number": "cool-product-001"}]}
    )
    assert (await get_product(client, headers, "cool-product-001"))["name"] == "Cool T-shirt"
    await sync_ok(
        client,
        headers,
        "/products/sync",
        {"products": [{"item_number": "cool-product-001", "name": None}]},
    )
    assert (await get_product(client, headers, "cool-product-001"))["name"] is None


async def test_delete_variants_and_products(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    await create_tshirt(client, headers)
    result = await sync_ok(
        client,
        headers,
        "/products/sync",
        {
            "products": [
                {
                    "item_number": "cool-product-001",
                    "variants": [
                        {"sku": "cool-product-001-100-XS", "delete": True},
                        {"sku": "never-existed", "delete": True},
                    ],
                },
            ]
        },
    )
    assert [v["result"] for v in result["products"][0]["variants"]] == ["deleted", "not_found"]
    assert len((await get_product(client, headers, "cool-product-001"))["variants"]) == 9

    result = await sync_ok(
        client,
        headers,
        "/products/sync",
        {
            "products": [
                {"item_number": "cool-product-001", "delete": True},
                {"item_number": "never-existed", "delete": True},
            ]
        },
    )
    assert [p["result"] for p in result["products"]] == ["deleted", "not_found"]
    assert (await client.get("/products/cool-product-001", headers=headers)).status_code == 404
    # Its SKUs are free again.
    await create_tshirt(client, headers, "other-product")
    await sync_ok(
        client,
        headers,
        "/products/sync",
        {"products": [{"item_number": "x", "variants": [{"sku": "cool-product-001-100-S"}]}]},
    )


async def test_sku_of_another_product_fails_the_whole_request(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    await create_tshirt(client, headers)
    before = (await client.get("/products", headers=headers)).json()
    response = await client.post(
        "/products/sync",
        headers=headers,
        json={
            "products": [
                {"item_number": "new-product", "name": "New"},
                {
                    "item_number": "thief",
                    "variants": [{"sku": "fresh"}, {"sku": "cool-product-001-900-L"}],
                },
            ]
        },
    )
    assert response.status_code == 422
    assert pointers(response) == ["/products/1/variants/1/sku"]
    assert response.json()["errors"][0]["code"] == "sku_taken"
    assert (await client.get("/products", headers=headers)).json() == before  # nothing applied


@pytest.mark.parametrize(
    ("body", "expected_pointers"),
    [
        ({"products": [{"item_number": "a"}, {"item_number": "a"}]}, ["/products/1/item_number"]),
        (
            {
                "products": [
                    {"item_number": "a", "variants": [{"sku": "s"}]},
                    {"item_number": "b", "variants": [{"sku": "s"}]},
                ]
            },
            ["/products/1/variants/0/sku"],
        ),
        ({"products": [{"item_number": "a", "colour": "red"}]}, ["/products/0/colour"]),
        ({"products": [{"item_number": ""}]}, ["/products/0/item_number"]),
        ({"products": [{"name": "no item number"}]}, ["/products/0/item_number"]),
        ({"products": []}, ["/products"]),
        ({"product": []}, ["/products", "/product"]),
        (
            {"products": [{"item_number": "a", "variants": [{"sku": 12, "delete": "maybe"}]}]},
            ["/products/0/variants/0/sku", "/products/0/variants/0/delete"],
        ),
        (
            {"products": [{"item_number": "a", "delete": True, "variants": [{"sku": "s"}]}]},
            ["/products/0/variants"],
        ),
        ({"products": [{"item_number": f"p{i}"} for i in range(101)]}, ["/products"]),
    ],
)
async def test_invalid_requests_report_each_problem_and_change_nothing(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    body: dict[str, Any],
    expected_pointers: list[str],
) -> None:
    response = await client.post("/products/sync", headers=headers, json=body)
    assert response.status_code == 422, response.text
    assert sorted(pointers(response)) == sorted(expected_pointers)
    assert (await client.get("/products", headers=headers)).json()["meta"]["total"] == 0


async def test_body_that_is_not_json_is_400(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post(
        "/products/sync",
        headers={**headers, "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "invalid_json"
    assert response.json()["errors"][0]["title"] == "Malformed JSON"


async def test_product_not_found_is_404_in_shape(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/products/nope", headers=headers)
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "not_found"
    assert "nope" in response.json()["errors"][0]["detail"]


async def test_item_numbers_with_slashes_and_spaces_round_trip(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    await sync_ok(client, headers, "/products/sync", {"products": [{"item_number": "A B/ø"}]})
    response = await client.get("/products/A%20B%2F%C3%B8", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["item_number"] == "A B/ø"
