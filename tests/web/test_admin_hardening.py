"""The admin pages against hostile and stale input: bounded parameters, sessions that end
with their token, sign-out that always ends the server session."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.catalog import auth as catalog_auth
from imagesync.kit.db import session_scope
from imagesync.web import sessions
from tests.factories import create_account, sync_ok
from tests.web.test_admin_lists import sign_in


@pytest.mark.parametrize(
    "path",
    [
        "/admin/products?page=99999999999999999999",  # was a 500 (OverflowError)
        "/admin/jobs?page=99999999999999999999",
        "/admin/products?page=-99999999999999999999",
        "/admin/jobs?page=0&status=%3Cscript%3E",
        "/admin/products?q=" + "%25" * 2000,
        "/admin/products/" + "x" * 3000,
        "/admin/jobs/" + "%00" * 50,
        "/admin/products/p1?order=%27%22%3E",
    ],
)
async def test_no_parameter_makes_a_page_fail(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], path: str
) -> None:
    headers = await create_account(sessionmaker)
    await sync_ok(client, headers, "/products/sync", {"products": [{"item_number": "p1"}]})
    await sign_in(client, headers["Authorization"].removeprefix("Bearer "))
    response = await client.get(path)
    assert response.status_code in (200, 404, 422), response.text[:300]
    assert "<script>" not in response.text


async def test_a_page_past_the_last_shows_an_empty_page(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    headers = await create_account(sessionmaker)
    await sync_ok(client, headers, "/products/sync", {"products": [{"item_number": "p1"}]})
    await sign_in(client, headers["Authorization"].removeprefix("Bearer "))
    page = await client.get("/admin/products?page=99999999999999999999")
    assert page.status_code == 200
    assert 'href="/admin/products/p1"' not in page.text


async def test_revoking_the_token_ends_the_sessions_opened_with_it(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    headers = await create_account(sessionmaker)
    token = headers["Authorization"].removeprefix("Bearer ")
    await sign_in(client, token)
    assert (await client.get("/admin/products")).status_code == 200
    async with session_scope(sessionmaker) as session:
        await catalog_auth.revoke_token(session, token[:16])  # any prefix of 8 or more
    answer = await client.get("/admin/products")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/admin/sign-in")


async def test_sessions_are_listed_and_ended_by_hand(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    headers = await create_account(sessionmaker, "acme")
    token = headers["Authorization"].removeprefix("Bearer ")
    await sign_in(client, token)
    async with session_scope(sessionmaker) as session:
        listed = await sessions.list_sessions(session, "acme")
        assert [s.token_prefix for s in listed] == [token[:12]]
        assert await sessions.revoke_sessions(session, "acme") == 1
    assert (await client.get("/admin/products")).status_code == 303
    async with session_scope(sessionmaker) as session:
        assert await sessions.list_sessions(session, "acme") == []


async def test_sign_out_without_its_csrf_token_still_ends_the_session(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    headers = await create_account(sessionmaker)
    await sign_in(client, headers["Authorization"].removeprefix("Bearer "))
    cookie = client.cookies.get(sessions.COOKIE)
    assert cookie is not None
    out = await client.post("/admin/sign-out", data={})
    assert out.status_code == 303
    client.cookies.set(sessions.COOKIE, cookie, path=sessions.PATH)  # replayed
    answer = await client.get("/admin/products")
    assert answer.status_code == 303  # the server session is gone, not only the cookie
