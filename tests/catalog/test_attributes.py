"""POST /attributes/sync and GET /attributes."""

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.factories import create_account, pointers, sync_ok


@pytest.fixture
async def headers(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, str]:
    return await create_account(sessionmaker)


COLORS = {
    "attributes": [
        {
            "name": "Color",
            "values": [{"value": "Black", "code": "100"}, {"value": "White", "code": "900"}],
        }
    ]
}


async def test_sync_creates_then_updates_codes(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    first = await sync_ok(client, headers, "/attributes/sync", COLORS)
    assert first["counts"]["attributes"]["created"] == 1
    assert first["counts"]["values"]["created"] == 2

    second = await sync_ok(
        client,
        headers,
        "/attributes/sync",
        {
            "attributes": [
                {
                    "name": "Color",
                    "values": [
                        {"value": "Black", "code": "101"},
                        {"value": "White", "code": "900"},
                        {"value": "Red", "code": "300"},
                    ],
                },
                {"name": "Size", "values": [{"value": "XS"}]},
            ]
        },
    )
    assert second["counts"]["attributes"] == {
        "created": 1,
        "updated": 0,
        "unchanged": 1,
        "deleted": 0,
        "not_found": 0,
    }
    assert second["counts"]["values"]["created"] == 2
    assert second["counts"]["values"]["updated"] == 1
    assert second["counts"]["values"]["unchanged"] == 1

    listed = (await client.get("/attributes", headers=headers)).json()
    assert listed == {
        "attributes": [
            {
                "name": "Color",
                "values": [
                    {"value": "Black", "code": "101"},
                    {"value": "White", "code": "900"},
                    {"value": "Red", "code": "300"},
                ],
            },
            {"name": "Size", "values": [{"value": "XS", "code": None}]},
        ]
    }


async def test_codes_can_be_swapped_in_one_request(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    await sync_ok(client, headers, "/attributes/sync", COLORS)
    await sync_ok(
        client,
        headers,
        "/attributes/sync",
        {
            "attributes": [
                {
                    "name": "Color",
                    "values": [
                        {"value": "Black", "code": "900"},
                        {"value": "White", "code": "100"},
                    ],
                }
            ]
        },
    )
    listed = (await client.get("/attributes", headers=headers)).json()
    assert listed["attributes"][0]["values"] == [
        {"value": "Black", "code": "900"},
        {"value": "White", "code": "100"},
    ]


async def test_one_code_on_two_values_is_refused_and_nothing_changes(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    await sync_ok(client, headers, "/attributes/sync", COLORS)
    response = await client.post(
        "/attributes/sync",
        headers=headers,
        json={"attributes": [{"name": "Color", "values": [{"value": "Red", "code": "100"}]}]},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "duplicate_code"
    assert pointers(response) == ["/attributes/0/values/0/code"]
    listed = (await client.get("/attributes", headers=headers)).json()
    assert listed["attributes"][0]["values"] == COLORS["attributes"][0]["values"]


async def test_duplicates_within_a_request_are_refused(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post(
        "/attributes/sync",
        headers=headers,
        json={
            "attributes": [
                {"name": "Color", "values": [{"value": "Black"}, {"value": "Black"}]},
                {"name": "Color", "values": []},
            ]
        },
    )
    assert response.status_code == 422
    assert sorted(pointers(response)) == ["/attributes/0/values/1/value", "/attributes/1/name"]
