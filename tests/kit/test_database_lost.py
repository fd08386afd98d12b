"""A database connection cut under a request is a 503 with Retry-After, not a 500: the
transaction was rolled back, so the client sends the request again, and the next one is
served. (Connections that died while idle are replaced before use: `ping_when_idle`.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.app import create_app
from imagesync.client import AsyncClient as ImagesyncClient
from imagesync.kit.db import PING_AFTER_IDLE_SECONDS
from imagesync.kit.settings import Settings
from tests.factories import create_account

SLOW_INSERT = [
    "CREATE OR REPLACE FUNCTION slow_insert() RETURNS trigger AS $$ "
    "BEGIN PERFORM pg_sleep(1.5); RETURN NEW; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER slow_insert BEFORE INSERT ON product "
    "FOR EACH ROW EXECUTE FUNCTION slow_insert()",
]
DROP = ["DROP TRIGGER IF EXISTS slow_insert ON product", "DROP FUNCTION IF EXISTS slow_insert()"]


def admin(database_url: str) -> psycopg.Connection[tuple[object, ...]]:
    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    return psycopg.connect(url, autocommit=True)


def cut_connections(database_url: str) -> int:
    """Terminate every other backend of the test's database (the pool's connections)."""
    with admin(database_url) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


@pytest.fixture
def slow_inserts(database_url: str) -> Iterator[str]:
    """PostgreSQL whose product INSERTs take 1.5 s: time to cut the connection under one."""
    if not database_url.startswith("postgresql"):
        pytest.skip("connections are cut with pg_terminate_backend")
    with admin(database_url) as conn:
        for statement in DROP + SLOW_INSERT:
            conn.execute(statement)
    yield database_url
    with admin(database_url) as conn:
        for statement in DROP:
            conn.execute(statement)


async def cut_soon(database_url: str) -> None:
    await asyncio.sleep(0.5)
    assert await asyncio.to_thread(cut_connections, database_url) >= 1


async def test_a_connection_cut_mid_request_is_a_503_with_retry_after(
    slow_inserts: str, client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    headers = await create_account(sessionmaker)
    body = {"products": [{"item_number": "p1"}]}
    cutting = asyncio.create_task(cut_soon(slow_inserts))
    cut = await client.post("/products/sync", json=body, headers=headers)
    await cutting
    assert cut.status_code == 503, cut.text
    assert cut.headers["retry-after"] == "2"
    assert cut.json()["errors"][0]["code"] == "unavailable"
    assert "terminat" not in cut.text  # the cause is the operator's, in the log
    assert (await client.get("/products/p1", headers=headers)).status_code == 404  # rolled back
    again = await client.post("/products/sync", json=body, headers=headers)
    assert again.status_code == 200, again.text


async def test_the_client_sends_it_again_by_itself(
    slow_inserts: str, client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    headers = await create_account(sessionmaker)
    token = headers["Authorization"].removeprefix("Bearer ")
    async with ImagesyncClient("http://imagesync.test", token, transport=client._transport) as api:
        cutting = asyncio.create_task(cut_soon(slow_inserts))
        result = await api.sync_products([{"item_number": "p1"}])
        await cutting
    assert [p.item_number for p in result.products] == ["p1"]
    assert (await client.get("/products/p1", headers=headers)).status_code == 200


async def test_a_connection_that_died_idle_is_replaced_and_a_busy_one_is_not_pinged(
    database_url: str,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A burst's requests take the connection the one before used a moment ago, with no
    round trip to ask whether it lives. One the database cut meanwhile is asked, and
    replaced, with the pool, so the request right after a cut is served, not a 503; so
    is one after a quiet while. (No runner here: only the requests take connections.)"""
    if not database_url.startswith("postgresql"):
        pytest.skip("connections are cut with pg_terminate_backend")
    headers = await create_account(sessionmaker)
    app = create_app(settings.model_copy(update={"embedded_worker": False}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://imagesync.test"
        ) as client,
    ):
        dialect = app.state.sessionmaker.kw["bind"].dialect
        pings: list[object] = []
        ping = dialect.do_ping

        def counted(dbapi_connection: object) -> bool:
            pings.append(dbapi_connection)
            return bool(ping(dbapi_connection))

        async def read() -> int:
            return (await client.get("/products/p1", headers=headers)).status_code

        monkeypatch.setattr(dialect, "do_ping", counted)
        assert [await read() for _ in range(5)] == [404] * 5  # a burst
        assert pings == []
        assert await asyncio.to_thread(cut_connections, database_url) >= 1
        await asyncio.sleep(0.2)  # the backend's goodbye reaches the socket
        assert await read() == 404
        assert len(pings) == 1  # the dead one; the rest of the pool is replaced unasked
        assert [await read() for _ in range(5)] == [404] * 5
        assert len(pings) == 1
        await asyncio.sleep(PING_AFTER_IDLE_SECONDS + 0.2)
        assert await read() == 404
        assert len(pings) == 2  # idle for a while: asked, alive
