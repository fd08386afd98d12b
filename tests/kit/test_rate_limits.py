"""Rate limits: per API token on the API, per client address on sign-in; 429 in TRAEDE's
shape with Retry-After, the IETF draft headers on every counted answer, and the client
waits as it is told."""

from __future__ import annotations

import asyncio
import math
import re
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import redis
from fastapi import FastAPI
from hypothesis import assume, given
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.app import create_app
from imagesync.client import AsyncClient as ImagesyncClient
from imagesync.kit.ratelimit import sliding_count
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


@pytest.fixture(params=["redis", "database"])
async def shared(
    request: pytest.FixtureRequest, database_url: str
) -> AsyncIterator[tuple[FastAPI, FastAPI]]:
    """Two API processes' apps counting in one Redis, or (unset) in PostgreSQL."""
    if request.param == "redis":
        try:
            redis.Redis.from_url(REDIS).ping()
        except redis.ConnectionError as exc:  # .ci/run starts it
            pytest.fail(f"Redis is not reachable at {REDIS}: {exc}")
    elif database_url.startswith("sqlite"):
        pytest.skip("on SQLite the counts live in each process (documented)")
    settings = Settings(
        database_url=database_url,
        storage_url="memory://",
        embedded_worker=False,
        rate_limit="3/minute",
        rate_limit_storage=REDIS if request.param == "redis" else "",
    )
    first, second = create_app(settings), create_app(settings)
    async with first.router.lifespan_context(first), second.router.lifespan_context(second):
        yield first, second


async def test_every_process_shares_the_count(
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


async def test_the_shared_count_is_exact_under_concurrent_requests(
    shared: tuple[FastAPI, FastAPI], sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    headers = await create_account(sessionmaker, f"acme-{uuid.uuid4().hex[:8]}")
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://t") for a in shared
    ]
    async with clients[0], clients[1]:
        answers = await asyncio.gather(
            *(clients[i % 2].get("/products", headers=headers) for i in range(12))
        )
    assert sorted(a.status_code for a in answers) == [200] * 3 + [429] * 9


def test_unset_the_counts_live_in_postgresql_and_in_memory_on_sqlite() -> None:
    on_postgres = Settings(database_url="postgresql://localhost/x", storage_url="memory://")
    on_sqlite = Settings(database_url="sqlite:///x.db", storage_url="memory://")
    assert on_postgres.rate_counts_in == "database"
    assert on_sqlite.rate_counts_in == "memory://"
    chosen = Settings(database_url="postgresql://localhost/x", rate_limit_storage=REDIS)
    assert chosen.rate_counts_in == REDIS


@given(
    amount=st.integers(1, 1000),
    window=st.sampled_from([1, 60, 3600]),
    previous=st.integers(0, 3000),
    current=st.integers(0, 3000),
    share=st.floats(0, 0.999),
)
def test_a_refused_request_is_told_exactly_when_the_next_one_is_allowed(
    amount: int, window: int, previous: int, current: int, share: float
) -> None:
    """The sliding window's promise, against a model that steps through time: refused
    now, allowed once Retry-After has passed, and still refused just before."""
    into = share * window

    def allowed_at(t: float) -> bool:  # t seconds from now, with nothing counted meanwhile
        turns, at = divmod(into + t, window)
        before, now = (previous, current) if turns == 0 else (current if turns == 1 else 0, 0)
        return math.floor(before * (1 - at / window)) + now + 1 <= amount

    assume(not allowed_at(0))
    count = sliding_count(amount, window, previous, current, into, allowed=False)
    assert not count.allowed
    assert allowed_at(count.reset + 1e-6 * window)
    if count.reset > 1e-3 * window:
        assert not allowed_at(count.reset - 1e-3 * window)
