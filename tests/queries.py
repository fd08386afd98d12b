"""Counting what a path spends on the database, as Django's `assertNumQueries` does: each
statement sent, and each transaction begun, on one engine. The jobs procrastinate
inserts on that engine's connections (inside the caller's transaction) count too."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from procrastinate.psycopg_connector import PsycopgConnector
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker


@dataclass
class Spent:
    statements: list[str] = field(default_factory=list)
    transactions: int = 0

    def __str__(self) -> str:
        listed = "\n".join(
            f"  {i}. {' '.join(s.split())[:160]}" for i, s in enumerate(self.statements, 1)
        )
        return f"{len(self.statements)} statements in {self.transactions} transactions:\n{listed}"


def engine_of(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    engine: AsyncEngine = sessionmaker.kw["bind"]
    return engine


@contextmanager
def counting(*sessionmakers: async_sessionmaker[AsyncSession]) -> Iterator[Spent]:
    """What the block spends on the sessionmakers' engines (the writer's and, on SQLite,
    the readers')."""
    spent = Spent()
    engines = list({id(e): e for e in (engine_of(s).sync_engine for s in sessionmakers)}.values())

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        spent.statements.append(sql)

    def begin(_conn: Any) -> None:
        spent.transactions += 1

    defer = PsycopgConnector.execute_query_all_async_with_connection

    async def deferred(self: PsycopgConnector, connection: Any, query: Any, **args: Any) -> Any:
        spent.statements.append(f"/* procrastinate */ {query}")
        return await defer(self, connection, query, **args)

    for engine in engines:
        event.listen(engine, "before_cursor_execute", statement)
        event.listen(engine, "begin", begin)
    PsycopgConnector.execute_query_all_async_with_connection = deferred  # type: ignore[method-assign]
    try:
        yield spent
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", statement)
            event.remove(engine, "begin", begin)
        PsycopgConnector.execute_query_all_async_with_connection = defer  # type: ignore[method-assign]
