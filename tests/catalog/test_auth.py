"""Tokens: required on every API call, stored hashed, revocable."""

import asyncio
import hashlib
import time

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.catalog import auth as catalog_auth
from imagesync.catalog.models import ApiToken
from imagesync.kit.db import session_scope
from imagesync.kit.errors import NotFound, ValidationFailed
from tests.factories import auth, create_account
from tests.kit.test_errors import assert_error_shape

API_CALLS = [
    ("GET", "/products"),
    ("GET", "/products/anything"),
    ("GET", "/attributes"),
    ("POST", "/products/sync"),
    ("POST", "/attributes/sync"),
    ("GET", "/v10/products"),
]


@pytest.mark.parametrize(("method", "path"), API_CALLS)
@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer isk_not-a-real-token"],
)
async def test_api_calls_without_a_valid_token_get_401(
    client: httpx.AsyncClient, method: str, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await client.request(method, path, headers=headers, json={})
    assert response.status_code == 401
    assert_error_shape(response.json(), 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_valid_token_is_accepted_on_both_prefixes(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    headers = await create_account(sessionmaker)
    assert (await client.get("/products", headers=headers)).status_code == 200
    assert (await client.get("/v10/products", headers=headers)).status_code == 200
    lower = {"Authorization": headers["Authorization"].replace("Bearer", "bearer")}
    assert (await client.get("/products", headers=lower)).status_code == 200


async def test_tokens_are_stored_only_as_sha256(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with session_scope(sessionmaker) as session:
        issued = await catalog_auth.create_account(session, "acme")
    async with session_scope(sessionmaker) as session:
        rows = (await session.scalars(select(ApiToken))).all()
    assert len(rows) == 1
    stored = rows[0]
    assert stored.token_hash == hashlib.sha256(issued.token.encode()).hexdigest()
    assert issued.token not in (stored.token_hash, stored.prefix)
    assert issued.token.startswith(stored.prefix)
    assert len(issued.token) > len(stored.prefix) + 20


async def test_revoked_token_gets_401_and_others_keep_working(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async with session_scope(sessionmaker) as session:
        first = await catalog_auth.create_account(session, "acme")
        second = await catalog_auth.create_token(session, "acme")
    async with session_scope(sessionmaker) as session:
        await catalog_auth.revoke_token(session, first.prefix)
    assert (await client.get("/products", headers=auth(first.token))).status_code == 401
    assert (await client.get("/products", headers=auth(second.token))).status_code == 200


async def test_a_token_revoked_elsewhere_stops_working_within_the_cache_time(
    app: FastAPI, client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """The API keeps a token it has read for `IMAGESYNC_TOKEN_CACHE_SECONDS`; one revoked
    by another process (`imagesync tokens revoke`) is refused once that has passed."""
    app.state.token_cache.seconds = 0.5
    async with session_scope(sessionmaker) as session:
        issued = await catalog_auth.create_account(session, "acme")
    assert (await client.get("/products", headers=auth(issued.token))).status_code == 200
    async with session_scope(sessionmaker) as session:  # as from another process
        await catalog_auth.revoke_token(session, issued.prefix)
    answers = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        answers.append((await client.get("/products", headers=auth(issued.token))).status_code)
        if answers[-1] == 401:
            break
        await asyncio.sleep(0.05)
    assert answers[0] == 200  # cached: the revocation is seen within the cache time
    assert answers[-1] == 401, answers
    assert len(answers) <= 0.5 / 0.05 + 2  # and no later
    # A rolled-back request leaves the cached account usable by the next one.
    second = (await catalog_auth_token(sessionmaker, "acme")).token
    for _ in range(2):
        missing = await client.get("/products/images/sync/nope", headers=auth(second))
        assert missing.status_code == 404, missing.text


async def catalog_auth_token(
    sessionmaker: async_sessionmaker[AsyncSession], account: str
) -> catalog_auth.IssuedToken:
    async with session_scope(sessionmaker) as session:
        return await catalog_auth.create_token(session, account)


async def test_revoke_by_whole_token_and_refusals(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with session_scope(sessionmaker) as session:
        issued = await catalog_auth.create_account(session, "acme")
    async with session_scope(sessionmaker) as session:
        revoked = await catalog_auth.revoke_token(session, issued.token)
        assert revoked.revoked_at is not None
    async with session_scope(sessionmaker) as session:
        with pytest.raises(NotFound):
            await catalog_auth.revoke_token(session, issued.prefix)  # already revoked
        with pytest.raises(ValidationFailed):
            await catalog_auth.revoke_token(session, "isk_")  # too short to name one token
