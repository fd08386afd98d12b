"""aiosqlite, one trip to its thread per statement, and none while a transaction holds the
writer.

SQLAlchemy's aiosqlite adapter sends each statement to aiosqlite's thread four times:
to make a cursor, to execute, to fetch the rows and to close the cursor. Each trip comes
back through a turn of the event loop, and while the loop serves other tasks (a first
import's downloads), a transaction on SQLite's one writer holds the database across all
of them. Here the cursor is made, executed, read and closed in one trip; the rows, the
description, the row count and the last row id come back together (docs/benchmarks.md,
"Where a first import's time goes").

A writer's engine (`OneTripDBAPI(at_once=True)`) goes further. Once a transaction has
written, it holds SQLite's one writer, and in WAL mode no other connection can make its
statements wait: they run, and it commits, at once on the caller's thread, so that no
turn of a busy loop stretches the time every other writer waits for it. Its first write
runs at once too, unless another connection has the writer: then it waits for it in
aiosqlite's thread, as before, and the loop goes on. Reads outside a write (a big page's)
still run in the thread: they never hold the writer, and may take long.

It relies on two private parts of aiosqlite (`Connection._execute`, which runs a
function in the connection's thread, and `Connection._conn`), as SQLAlchemy's own
adapter does (`Connection._tx`); the SQLite half of the test suite runs on it.
"""

from __future__ import annotations

import collections
import sqlite3
import time
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import EMPTY_DICT

_Ran = tuple[list[Any], Any, int, int | None]
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
# How long a write waits for another connection's writer before it fails (ms).
BUSY_TIMEOUT_MS = 30_000
# How long statements run at once before one lets the loop turn (a trip to the thread):
# a long transaction (a catalog sync of a hundred products) does not hold up the
# process's other requests for all of its length.
AT_ONCE_SECONDS = 0.005


def pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    """Each connection's settings. WAL lets readers run beside the one writer; the busy
    timeout makes writers queue instead of failing at once; SQLite leaves foreign keys
    off unless asked."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _run(connection: sqlite3.Connection, operation: str, parameters: Any, *, many: bool) -> _Ran:
    """In aiosqlite's thread: the statement run, with what SQLAlchemy reads of it."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return rows, cursor.description, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _first_write_at_once(
    connection: sqlite3.Connection, operation: str, parameters: Any, *, many: bool
) -> _Ran | None:
    """On the caller's thread: the statement that begins a write, unless another
    connection holds the writer (None: it was not run, and waits in the thread)."""
    connection.execute("PRAGMA busy_timeout=0")
    try:
        return _run(connection, operation, parameters, many=many)
    except sqlite3.OperationalError as error:
        if error.sqlite_errorcode == sqlite3.SQLITE_BUSY:
            return None
        raise
    finally:
        connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ("_description", "_lastrowid", "_rowcount")
    _awaitable_cursor_close = False  # nothing is left open in the thread

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass  # every row is fetched at once

    def close(self) -> None:
        self._rows.clear()

    async def _execute_async(self, operation: Any, parameters: Any) -> None:
        await self._ran(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> None:
        await self._ran(operation, seq_of_parameters, many=True)

    async def _ran(self, operation: Any, parameters: Any, *, many: bool) -> None:
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        raw: sqlite3.Connection = connection._conn
        adapted: OneTripConnection = self._adapt_connection  # type: ignore[assignment]
        async with adapted._execute_mutex:
            ran: _Ran | None = None
            if adapted.dbapi.at_once and adapted.may_run_at_once():
                if raw.in_transaction:  # it holds the writer: nothing can make it wait
                    ran = _run(raw, operation, parameters, many=many)
                elif operation.lstrip()[:7].upper().startswith(_WRITES):
                    ran = _first_write_at_once(raw, operation, parameters, many=many)
            if ran is None:
                ran = await connection._execute(  # type: ignore[no-untyped-call]
                    _run, raw, operation, parameters, many=many
                )
                adapted.at_once_since = None  # the loop turned
        rows, self._description, self._rowcount, self._lastrowid = ran
        self._rows = collections.deque(rows)


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ("at_once_since",)
    _cursor_cls = OneTripCursor  # type: ignore[assignment]  # a subclass

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        # When its statements began to run at once, since the loop last turned.
        self.at_once_since: float | None = None

    def may_run_at_once(self) -> bool:
        now = time.perf_counter()
        if self.at_once_since is None:
            self.at_once_since = now
        return now - self.at_once_since < AT_ONCE_SECONDS

    def commit(self) -> None:
        self.at_once_since = None  # the caller awaits others' work next
        if self._ends_at_once():
            try:
                self._connection._conn.commit()
            except Exception as error:
                self._handle_exception(error)
        else:
            super().commit()

    def rollback(self) -> None:
        self.at_once_since = None
        if self._ends_at_once():
            try:
                self._connection._conn.rollback()
            except Exception as error:
                self._handle_exception(error)
        else:
            super().rollback()

    def _ends_at_once(self) -> bool:
        """A writer's transaction ends on the caller's thread: it holds the writer, and
        nothing can make it wait. So does a connection in no transaction (as when the
        pool takes it back), where there is nothing to end."""
        if self._connection._connection is None:  # closed
            return False
        raw: sqlite3.Connection = self._connection._conn
        return self.dbapi.at_once or not raw.in_transaction


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module to give `create_async_engine(..., module=...)` for
    `sqlite+aiosqlite` URLs; `at_once` for a writer's engine (see the module's text)."""

    def __init__(self, *, at_once: bool = False) -> None:
        super().__init__(aiosqlite, sqlite3)
        self.at_once = at_once

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        adapted = super().connect(*arg, **kw)
        return OneTripConnection(self, adapted._connection)
