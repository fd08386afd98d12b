"""Small typed helpers that put the catalog into a known state."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.catalog import auth as catalog_auth
from imagesync.kit.db import session_scope


async def create_account(
    sessionmaker: async_sessionmaker[AsyncSession], name: str = "acme"
) -> dict[str, str]:
    """Create an account; returns the Authorization header of its token."""
    async with session_scope(sessionmaker) as session:
        issued = await catalog_auth.create_account(session, name)
    return auth(issued.token)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


TSHIRT_COLORS = {"Black": "100", "White": "900"}
TSHIRT_SIZES = ["XS", "S", "M", "L", "XL"]


async def create_tshirt(
    client: httpx.AsyncClient, headers: dict[str, str], item_number: str = "cool-product-001"
) -> dict[str, Any]:
    """TRAEDE's example: a T-shirt in Black (100) and White (900), sizes XS-XL."""
    await sync_ok(
        client,
        headers,
        "/attributes/sync",
        {
            "attributes": [
                {
                    "name": "Color",
                    "values": [{"value": v, "code": c} for v, c in TSHIRT_COLORS.items()],
                },
            ]
        },
    )
    variants = [
        {"sku": f"{item_number}-{code}-{size}", "attributes": {"Color": color, "Size": size}}
        for color, code in TSHIRT_COLORS.items()
        for size in TSHIRT_SIZES
    ]
    return await sync_ok(
        client,
        headers,
        "/products/sync",
        {"products": [{"item_number": item_number, "name": "Cool T-shirt", "variants": variants}]},
    )


async def sync_ok(
    client: httpx.AsyncClient, headers: dict[str, str], path: str, body: dict[str, Any]
) -> dict[str, Any]:
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def wait_for_job(
    client: httpx.AsyncClient, headers: dict[str, str], job_id: str, *, seconds: float = 10
) -> dict[str, Any]:
    """Poll the job until it is no longer queued or running (or time runs out)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        response = await client.get(f"/products/images/sync/{job_id}", headers=headers)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] not in ("queued", "running"):
            return job
        if asyncio.get_running_loop().time() >= deadline:
            return job
        await asyncio.sleep(0.05)


def pointers(response: httpx.Response) -> list[str]:
    """The JSON pointers of an error response, in order."""
    return [e.get("source", {}).get("pointer") for e in response.json()["errors"]]
