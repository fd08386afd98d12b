"""The lists' search and pages, in-process (the browser tests cover the rest)."""

from __future__ import annotations

import re

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.factories import create_account, sync_ok


async def sign_in(client: httpx.AsyncClient, token: str) -> None:
    form = await client.get("/admin/sign-in")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    answer = await client.post(
        "/admin/sign-in", data={"csrf": csrf[1], "token": token, "next": "/admin/products"}
    )
    assert answer.status_code == 303, answer.text


async def test_products_are_searched_and_paged(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    headers = await create_account(sessionmaker)
    products = [{"item_number": f"shirt-{n:02}", "name": f"Shirt {n}"} for n in range(25)]
    products.append({"item_number": "cap-01", "name": "Blue Cap"})
    await sync_ok(client, headers, "/products/sync", {"products": products})
    await sign_in(client, headers["Authorization"].removeprefix("Bearer "))

    first = (await client.get("/admin/products")).text
    assert "26 products" in first
    assert "Page 1 of 2" in first
    assert first.count('href="/admin/products/') == 20
    second = (await client.get("/admin/products?page=2")).text
    assert "Page 2 of 2" in second
    assert second.count('href="/admin/products/') == 6
    found = (await client.get("/admin/products?q=blue")).text
    assert "1 product matching" in found
    assert 'href="/admin/products/cap-01"' in found
    assert "shirt-" not in found


async def test_the_dashboard_and_jobs_read_on_both_databases(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    headers = await create_account(sessionmaker)
    await sync_ok(client, headers, "/products/sync", {"products": [{"item_number": "p1"}]})
    body = {
        "products": [{"item_number": "p1", "images": []}, {"item_number": "nope", "images": []}]
    }
    job = await client.post("/products/images/sync", json=body, headers=headers)
    assert job.status_code == 200, job.text  # nothing to download: finished at once
    await sign_in(client, headers["Authorization"].removeprefix("Bearer "))

    board = " ".join((await client.get("/admin")).text.split())
    assert "partially failed</span></a> 1" in board
    assert "product_not_found" in board
    jobs = (await client.get("/admin/jobs?status=partially_failed")).text
    assert f'href="/admin/jobs/{job.json()["id"]}"' in jobs
    page = (await client.get(f"/admin/jobs/{job.json()['id']}")).text
    assert "the account has no product &#39;nope&#39;" in page


async def test_signing_in_follows_only_a_path_of_these_pages(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    token = (await create_account(sessionmaker))["Authorization"].removeprefix("Bearer ")
    for target, expected in [
        ("https://evil.test/admin", "/admin"),
        ("//evil.test/admin", "/admin"),
        ("/administrator", "/admin"),
        ("/admin/jobs?status=failed", "/admin/jobs?status=failed"),
    ]:
        form = await client.get("/admin/sign-in")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        answer = await client.post(
            "/admin/sign-in", data={"csrf": csrf[1], "token": token, "next": target}
        )
        assert answer.headers["location"] == expected, target
