"""SQLite through `kit.sqlite`: a statement is one trip to aiosqlite's thread, none once
a writer's transaction holds the writer, and gives SQLAlchemy what the stock adapter gives
(rows, row counts, last row ids, many rows inserted at once, errors)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from imagesync.kit import sqlite
from imagesync.kit.db import create_engine


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'one.db'}")
    async with engine.begin() as connection:
        await connection.execute(
            text("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)")
        )
    yield engine
    await engine.dispose()


async def trips(connection: AsyncConnection) -> list[Any]:
    """Counts each function sent to the connection's aiosqlite thread from now on."""
    raw = (await connection.get_raw_connection()).driver_connection
    assert raw is not None
    sent: list[Any] = []
    execute = raw._execute

    async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(fn)
        return await execute(fn, *args, **kwargs)

    raw._execute = counted
    return sent


async def test_a_read_is_one_trip_to_the_thread(engine: AsyncEngine, tmp_path: Path) -> None:
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO item (name) VALUES ('a'), ('b')"))
    readers = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'one.db'}", read_only=True)
    try:
        for one in (readers, engine):  # outside a write, a writer's engine reads there too
            async with one.connect() as connection:
                sent = await trips(connection)
                rows = (await connection.execute(text("SELECT name FROM item ORDER BY id"))).all()
                assert [r.name for r in rows] == ["a", "b"]
                assert len(sent) == 1  # the stock adapter: cursor, execute, fetch, close (4)
    finally:
        await readers.dispose()


async def test_a_writers_transaction_runs_at_once(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its first write finds the writer free and takes it; from then on nothing can make
    it wait, and none of its statements, nor its commit, waits for a turn of the loop."""
    monkeypatch.setattr(sqlite, "AT_ONCE_SECONDS", 60.0)  # however slow this machine is
    async with engine.connect() as connection:
        sent = await trips(connection)
        await connection.execute(text("INSERT INTO item (name) VALUES ('a')"))
        await connection.execute(text("INSERT INTO item (name) VALUES (:n)"), [{"n": "b"}])
        rows = (await connection.execute(text("SELECT name FROM item ORDER BY id"))).all()
        await connection.commit()
        assert [r.name for r in rows] == ["a", "b"]
        assert sent == []
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM item"))).scalar() == 2


async def test_a_write_waits_for_another_writer_in_the_thread(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """While another connection (another process) holds the writer, a first write waits
    for it in aiosqlite's thread: the event loop goes on meanwhile."""
    other = sqlite3.connect(tmp_path / "one.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO item (name) VALUES ('theirs')")
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, other.execute, "COMMIT")
    ticks = []

    async def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(tick())
    try:
        async with engine.connect() as connection:
            sent = await trips(connection)
            started = time.monotonic()
            await connection.execute(text("INSERT INTO item (name) VALUES ('ours')"))
            waited = time.monotonic() - started
            await connection.commit()
    finally:
        ticking.cancel()
        other.close()
    assert waited >= 0.25
    assert len(sent) == 1  # the write, sent to the thread once the writer was taken
    assert sum(started < t < started + waited for t in ticks) >= 10  # the loop went on
    async with engine.connect() as connection:
        names = (await connection.execute(text("SELECT name FROM item ORDER BY id"))).all()
    assert [n.name for n in names] == ["theirs", "ours"]


async def test_what_sqlalchemy_reads_of_a_statement(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        inserted = await connection.execute(text("INSERT INTO item (name) VALUES ('a')"))
        assert inserted.lastrowid == 1
        await connection.execute(
            text("INSERT INTO item (name) VALUES (:name)"), [{"name": "b"}, {"name": "c"}]
        )
        updated = await connection.execute(text("UPDATE item SET name = name || '!'"))
        assert updated.rowcount == 3
        nothing = await connection.execute(text("SELECT id FROM item WHERE id > 10"))
        assert nothing.all() == []
        returned = await connection.execute(
            text("INSERT INTO item (name) VALUES ('d') RETURNING id, name")
        )
        assert returned.one() == (4, "d")
        rows = await connection.execute(text("SELECT id, name FROM item ORDER BY id"))
        assert list(rows.keys()) == ["id", "name"]
        assert rows.fetchmany(2) == [(1, "a!"), (2, "b!")]
        assert rows.all() == [(3, "c!"), (4, "d")]


async def test_errors_are_sqlalchemys_and_roll_back(engine: AsyncEngine) -> None:
    async def twice() -> None:
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO item (name) VALUES ('a')"))
            await connection.execute(text("INSERT INTO item (name) VALUES ('a')"))

    with pytest.raises(IntegrityError):
        await twice()
    async with engine.connect() as connection:
        with pytest.raises(OperationalError):
            await connection.execute(text("SELECT nothing FROM nowhere"))
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM item"))).scalar() == 0


async def test_a_long_transaction_lets_the_loop_turn(engine: AsyncEngine) -> None:
    """Statements run at once for at most `AT_ONCE_SECONDS` before one takes a trip to
    the thread: a long transaction does not hold up the process's other requests."""
    async with engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        assert raw is not None

        def slow() -> int:
            time.sleep(sqlite.AT_ONCE_SECONDS)
            return 1

        raw._conn.create_function("slow", 0, slow)
        sent = await trips(connection)
        await connection.execute(text("INSERT INTO item (name) VALUES ('a')"))
        for n in range(6):
            await connection.execute(text("UPDATE item SET name = :n WHERE slow()"), {"n": n})
        await connection.commit()
        assert 3 <= len(sent) <= 4  # every other statement, once its turn ran out
        sent.clear()
        await connection.execute(text("INSERT INTO item (name) VALUES ('b')"))
        await connection.commit()
        assert sent == []  # a new transaction starts at once
