"""Database plumbing: declarative base, engine, sessions and the migration runner."""

from __future__ import annotations

import asyncio
import select
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import pydantic_core
from alembic import command
from alembic.config import Config
from sqlalchemy import ColumnElement, DateTime, MetaData, Table, event, exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

from imagesync.kit.clock import utcnow as utcnow  # where most of the service imports it

# Stable constraint names, so Alembic migrations read the same on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _read_only(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def _to_json(value: Any) -> str:
    return pydantic_core.to_json(value).decode()


# JSON columns (a job entry's request and result, an image's rule) written and read by
# pydantic's encoder and parser, three to six times as fast as the standard library's.
JSON_CODEC: dict[str, Any] = {
    "json_serializer": _to_json,
    "json_deserializer": pydantic_core.from_json,
}


def insert_or_skip(
    table: Table, conflict: list[str], returning: ColumnElement[Any] | None = None
) -> dict[str, Any]:
    """An INSERT of `table` that leaves out a row conflicting on the `conflict` columns,
    built once per dialect (keyed by its name): sent with its rows as parameters, it is
    compiled once and goes as one multi-row INSERT (a VALUES list built from the rows
    would compile every time). `returning` names only the rows inserted."""
    statements: dict[str, Any] = {}
    for name, insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert)):
        statement = insert(table).on_conflict_do_nothing(index_elements=conflict)
        statements[name] = statement if returning is None else statement.returning(returning)
    return statements


def create_engine(url: str, *, read_only: bool = False, **kwargs: Any) -> AsyncEngine:
    """An async engine for an async URL (see `Settings.async_database_url`). On SQLite,
    `read_only` connections refuse any write (`PRAGMA query_only`)."""
    if url.startswith("sqlite"):
        from imagesync.kit.sqlite import OneTripDBAPI, pragmas

        module = OneTripDBAPI(at_once=not read_only)
        engine = create_async_engine(url, module=module, **JSON_CODEC, **kwargs)
        event.listen(engine.sync_engine, "connect", pragmas)
        if read_only:
            event.listen(engine.sync_engine, "connect", _read_only)
        return engine
    # The connection used last is handed out first: a burst keeps taking the few it
    # needs, and the others sit idle (pinged when next taken).
    engine = create_async_engine(url, pool_use_lifo=True, **JSON_CODEC, **kwargs)
    ping_when_idle(engine)
    return engine


# A pooled connection not used for this long is pinged before it is handed out again.
PING_AFTER_IDLE_SECONDS = 1.0
_IDLE_SINCE = "imagesync_idle_since"


def ping_when_idle(engine: AsyncEngine) -> None:
    """Replace before use a pooled connection that died while idle, as `pool_pre_ping`
    does, without its round trip on every request of a burst. A connection is pinged
    before it is handed out when the database said something to it while it sat in the
    pool (its socket has bytes or an end to read: a backend that is terminated, or shut
    down, says so and closes), or when it sat there for more than
    `PING_AFTER_IDLE_SECONDS`. One found dead is replaced, and the pool with it."""
    dialect = engine.dialect

    def checked_in(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    def checked_out(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None:
            return  # new
        if time.monotonic() - since < PING_AFTER_IDLE_SECONDS and not _told(dbapi_connection):
            return  # in use a moment ago, and nothing came since
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                # The others are likely dead too: each is replaced when next taken.
                raise exc.InvalidatePoolError("the connection died while idle") from error
            raise

    event.listen(engine.sync_engine.pool, "checkin", checked_in)
    event.listen(engine.sync_engine.pool, "checkout", checked_out)


def _told(dbapi_connection: Any) -> bool:
    """Whether an idle connection's socket has anything to read (an error, or its end):
    a look at the socket, no round trip. True when it cannot be looked at."""
    try:
        socket = dbapi_connection.driver_connection.pgconn.socket
        readable, _, _ = select.select([socket], [], [], 0)
    except Exception:  # not psycopg's, or closed already
        return True
    return bool(readable)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


# What runs once a session's transaction commits, kept in the session's `info`: one
# listener for every session, registered once, instead of one `event.listen` per
# transaction (a registry update that cost a no-op request about 2 % of its CPU).
_ON_COMMIT = "imagesync.on_commit"


def on_commit(session: AsyncSession | Session, then: Callable[[], None]) -> None:
    """Call `then` once `session`'s transaction commits; never if it rolls back."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    sync.info.setdefault(_ON_COMMIT, []).append(then)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    for then in session.info.pop(_ON_COMMIT, ()):
        then()


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(_ON_COMMIT, None)


@asynccontextmanager
async def session_scope(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One transaction: committed if the body succeeds, rolled back if it raises."""
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


def alembic_config(async_url: str) -> Config:
    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("imagesync").joinpath("migrations"))
    )
    config.attributes["database_url"] = async_url
    return config


def migrate(async_url: str, revision: str = "head") -> tuple[str | None, str | None]:
    """Apply pending migrations (blocking; call it outside a running event loop); the
    revision before and after (None: an empty database)."""
    before = current_revision(async_url)
    command.upgrade(alembic_config(async_url), revision)
    return before, current_revision(async_url)


def current_revision(async_url: str) -> str | None:
    """The database's migration revision (blocking); None for an empty database."""
    from alembic.migration import MigrationContext

    async def read() -> str | None:
        engine = create_engine(async_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(
                    lambda sync: MigrationContext.configure(sync).get_current_revision()
                )
        finally:
            await engine.dispose()

    return asyncio.run(read())


async def migrate_async(async_url: str, revision: str = "head") -> tuple[str | None, str | None]:
    return await asyncio.to_thread(migrate, async_url, revision)


def run_migrations_on(connection: Connection) -> None:
    """Used by migrations/env.py: run Alembic's context on an open connection."""
    from alembic import context

    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
