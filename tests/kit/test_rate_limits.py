"""Rate limits: per API token on the API, per client address on sign-in; 429 in TRAEDE's
shape with Retry-After, the IETF draft headers on every counted answer, and the client
waits as it is told."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import redis
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.app import create_app
from imagesync.client import AsyncClient as ImagesyncClient
from imagesync.kit.settings import Settings
from tests.factories import create_account

REDIS = "redis://127.0.0.1:6379"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        storage_url="memory://",
        embedded_worker=False,
        rate_limit="3/minute",
        sign_in_rate_limit="2/minute",
    )


async def test_a_token_over_its_limit_is_429_and_another_token_is_not(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    acme = await create_account(sessionmaker, "acme")
    other = await create_account(sessionmaker, "other")
    answers = [await client.get("/products", headers=acme) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[0].headers["ratelimit-policy"] == '"token";q=3;w=60'
    remaining = [re.search(r"r=(\d+)", a.headers["ratelimit"]) for a in answers]
    assert [int(m[1]) for m in remaining if m] == [2, 1, 0]

    over = await client.get("/products", headers=acme)
    assert over.status_code == 429
    (error,) = over.json()["errors"]
    assert (error["status"], error["code"]) == (429, "rate_limited")
    assert 1 <= int(over.headers["retry-after"]) <= 60
    assert "ratelimit" in over.headers
    # Counted before anything else: a body is not even read.
    refused = await client.post("/products/sync", content=b"[" * 1000, headers=acme)
    assert refused.status_code == 429

    assert (await client.get("/products", headers=other)).status_code == 200


async def test_errors_carry_the_headers_too(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    acme = await create_account(sessionmaker, "acme")
    missing = await client.get("/products/nope", headers=acme)
    assert missing.status_code == 404
    assert "ratelimit" in missing.headers


async def test_sign_in_attempts_are_limited_per_client_address(client: httpx.AsyncClient) -> None:
    for _ in range(2):
        form = await client.get("/admin/sign-in")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        wrong = await client.post("/admin/sign-in", data={"csrf": csrf[1], "token": "isk_no"})
        assert wrong.status_code == 401
    third = await client.post("/admin/sign-in", data={"csrf": "x", "token": "isk_no"})
    assert third.status_code == 429
    assert "Too many attempts" in third.text
    assert int(third.headers["retry-after"]) >= 1


async def test_the_client_waits_as_it_is_told_and_then_succeeds(
    database_url: str, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    fast = create_app(
        Settings(
            database_url=database_url,
            storage_url="memory://",
            embedded_worker=False,
            rate_limit="2/second",
        )
    )
    token = (await create_account(sessionmaker, "acme"))["Authorization"].removeprefix("Bearer ")
    async with fast.router.lifespan_context(fast):
        transport = httpx.ASGITransport(app=fast)
        async with ImagesyncClient("http://t", token, transport=transport) as api:
            start = time.monotonic()
            pages = [await api.products() for _ in range(5)]
            elapsed = time.monotonic() - start
    assert len(pages) == 5
    assert elapsed >= 0.9  # it waited for the limit instead of failing


@pytest.fixture
async def shared(database_url: str) -> AsyncIterator[tuple[FastAPI, FastAPI]]:
    """Two API processes' apps counting in one Redis."""
    try:
        redis.Redis.from_url(REDIS).ping()
    except redis.ConnectionError as exc:  # .ci/run starts it
        pytest.fail(f"Redis is not reachable at {REDIS}: {exc}")
    settings = Settings(
        database_url=database_url,
        storage_url="memory://",
        embedded_worker=False,
        rate_limit="3/minute",
        rate_limit_storage=REDIS,
    )
    first, second = create_app(settings), create_app(settings)
    async with first.router.lifespan_context(first), second.router.lifespan_context(second):
        yield first, second


async def test_with_redis_every_process_shares_the_count(
    shared: tuple[FastAPI, FastAPI], sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    headers = await create_account(sessionmaker, f"acme-{uuid.uuid4().hex[:8]}")
    first, second = (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://t") for a in shared
    )
    async with first, second:
        codes = [
            (await c.get("/products", headers=headers)).status_code
            for c in (first, second, first, second)
        ]
    assert codes == [200, 200, 200, 429]
