"""No account can read or change another account's data."""

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.factories import create_account, create_tshirt, sync_ok


async def test_accounts_see_only_their_own_catalog(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    alice = await create_account(sessionmaker, "alice")
    bob = await create_account(sessionmaker, "bob")
    await create_tshirt(client, alice)

    bob_products = (await client.get("/products", headers=bob)).json()
    assert bob_products["products"] == []
    assert bob_products["meta"]["total"] == 0
    assert (await client.get("/products/cool-product-001", headers=bob)).status_code == 404
    assert (await client.get("/attributes", headers=bob)).json() == {"attributes": []}


async def test_same_keys_in_two_accounts_are_separate_records(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    alice = await create_account(sessionmaker, "alice")
    bob = await create_account(sessionmaker, "bob")
    await create_tshirt(client, alice)

    # Bob uses Alice's item number, one of her SKUs and her attribute name.
    result = await sync_ok(
        client,
        bob,
        "/products/sync",
        {
            "products": [
                {
                    "item_number": "cool-product-001",
                    "name": "Bob's shirt",
                    "variants": [
                        {"sku": "cool-product-001-100-XS", "attributes": {"Color": "Blue"}}
                    ],
                }
            ]
        },
    )
    assert result["products"][0]["result"] == "created"
    assert result["products"][0]["variants"][0]["result"] == "created"
    await sync_ok(
        client,
        bob,
        "/attributes/sync",
        {
            "attributes": [
                {"name": "Color", "values": [{"value": "Black", "code": "999"}]},
            ]
        },
    )

    alice_product = (await client.get("/products/cool-product-001", headers=alice)).json()
    assert alice_product["name"] == "Cool T-shirt"
    assert len(alice_product["variants"]) == 10
    xs = alice_product["variants"][0]
    assert xs["sku"] == "cool-product-001-100-XS"
    assert xs["attributes"]["Color"] == {"value": "Black", "code": "100"}


async def test_an_account_cannot_delete_another_accounts_product(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    alice = await create_account(sessionmaker, "alice")
    bob = await create_account(sessionmaker, "bob")
    await create_tshirt(client, alice)

    result = await sync_ok(
        client,
        bob,
        "/products/sync",
        {
            "products": [
                {"item_number": "cool-product-001", "delete": True},
            ]
        },
    )
    assert result["products"][0]["result"] == "not_found"
    assert (await client.get("/products/cool-product-001", headers=alice)).status_code == 200
