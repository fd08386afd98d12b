"""The bare HTTP floor: a raw ASGI app, with no framework and no ORM, that does a no-op
re-sync's job on the service's own database, served by the same server software
(uvicorn, as `imagesync serve` runs it) and driven by the same client:

- checks the bearer token (its sha256 against the `api_token` rows, read once at start:
  the floor of a token cache);
- reads the request's products' images in one `SELECT ... IN` and compares them with
  the request in Python;
- records a job row (a table of its own, `bare_job`) in the same transaction;
- answers a small JSON: the job's id and status.

    BARE_DATABASE_URL=sqlite:///path.db  uvicorn bare_http:app --app-dir bench --port P
    BARE_DATABASE_URL=postgresql://...   (the same)

A driver that reads the answer's `status` sees "succeeded" and waits for nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from baselines import image_keys

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

READ = (
    "SELECT p.item_number, i.url, i.existance_key, i.sort, i.sort_b2c, i.alt, "
    "i.custom_filename FROM image i JOIN product p ON p.id = i.product_id "
    "WHERE p.account_id = {p} AND p.item_number IN ({items})"
)
CREATE = "CREATE TABLE IF NOT EXISTS bare_job (id TEXT PRIMARY KEY, account_id INTEGER, body TEXT)"
INSERT = "INSERT INTO bare_job (id, account_id, body) VALUES ({p}, {p}, {p})"


def unchanged(rows: Iterable[tuple[Any, ...]], products: list[dict[str, Any]]) -> list[bool]:
    current: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
    for row in rows:
        current[row[0]].add(tuple(row[1:]))
    return [image_keys(product) == current[product["item_number"]] for product in products]


class Sqlite:
    """One connection, as the service keeps one; SQLite answers in microseconds."""

    mark = "?"

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(CREATE)

    async def tokens(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT token_hash, account_id FROM api_token"))

    async def diff_and_record(
        self, account: int, products: list[dict[str, Any]], job: tuple[Any, ...]
    ) -> list[bool]:
        items = [p["item_number"] for p in products]
        read = READ.format(p="?", items=",".join("?" * len(items)))
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            found = unchanged(self.conn.execute(read, [account, *items]), products)
            self.conn.execute(INSERT.format(p="?"), job)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return found


class Postgres:
    """A pool of async connections, as the service keeps one."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pool: Any = None

    async def open(self) -> None:
        from psycopg_pool import AsyncConnectionPool

        self.pool = AsyncConnectionPool(self.url, min_size=4, max_size=10, open=False)
        await self.pool.open()
        async with self.pool.connection() as conn:
            await conn.execute(CREATE)

    async def tokens(self) -> dict[str, int]:
        await self.open()
        async with self.pool.connection() as conn:
            cursor = await conn.execute("SELECT token_hash, account_id FROM api_token")
            return dict(await cursor.fetchall())

    async def diff_and_record(
        self, account: int, products: list[dict[str, Any]], job: tuple[Any, ...]
    ) -> list[bool]:
        items = [p["item_number"] for p in products]
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                READ.format(p="%s", items=",".join(["%s"] * len(items))), [account, *items]
            )
            found = unchanged(await cursor.fetchall(), products)
            await conn.execute(INSERT.format(p="%s"), job)
        return found


def _database() -> Sqlite | Postgres:
    url = os.environ["BARE_DATABASE_URL"]
    if url.startswith("sqlite:///"):
        return Sqlite(url.removeprefix("sqlite:///"))
    return Postgres(url)


class App:
    def __init__(self) -> None:
        self.db = _database()
        self.tokens: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.tokens = await self.db.tokens()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] == "/healthz":
            await self.answer(send, 200, {"status": "ok"})
            return
        headers = dict(scope["headers"])
        scheme, _, token = headers.get(b"authorization", b"").decode().partition(" ")
        account = self.tokens.get(hashlib.sha256(token.strip().encode()).hexdigest())
        if scheme.lower() != "bearer" or account is None:
            await self.answer(send, 401, {"errors": [{"status": 401, "code": "unauthorized"}]})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        products = json.loads(body)["products"]
        job_id = uuid.uuid4().hex
        found = await self.db.diff_and_record(account, products, (job_id, account, body.decode()))
        status = "succeeded" if all(found) else "queued"
        await self.answer(send, 200 if all(found) else 202, {"id": job_id, "status": status})

    @staticmethod
    async def answer(send: Send, status: int, content: dict[str, Any]) -> None:
        payload = json.dumps(content).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


app = App()
