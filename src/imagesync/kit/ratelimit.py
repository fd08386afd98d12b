"""Rate limits: per API token on every API request, per client address on sign-in.

Counted in a sliding window (the previous window's count, weighted by how much of it
is still in view, plus the current one's). Where the count lives:
- on PostgreSQL, by default, in the database (`rate_window`, unlogged): every process
  of a deployment shares it, at one statement per counted request;
- in Redis (`IMAGESYNC_RATE_LIMIT_STORAGE=redis://...`), shared too, through the
  `limits` library;
- in this process's memory (`memory://`, and on SQLite unless Redis is set): with N API
  processes, a token gets up to N times the limit.
Every answer to a counted request carries the IETF draft headers
(`RateLimit-Policy: "token";q=600;w=60` and `RateLimit: "token";r=598;t=42`); one over
the limit is a 429 in TRAEDE's error shape with `Retry-After`, before any other work.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Protocol

from limits import RateLimitItem, parse
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string
from sqlalchemy import BigInteger, Integer, String, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagesync.kit.db import Base
from imagesync.kit.errors import ErrorResponse, ImageSyncError


class TooManyRequests(ImageSyncError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    policy: str  # the RateLimit-Policy header
    state: str  # the RateLimit header
    retry_after: int  # seconds until a request is allowed again (when refused)

    def headers(self) -> list[tuple[bytes, bytes]]:
        found = [(b"ratelimit-policy", self.policy.encode()), (b"ratelimit", self.state.encode())]
        if not self.allowed:
            found.append((b"retry-after", str(self.retry_after).encode()))
        return found


class RateWindow(Base):
    """One key's count in one window of one limit (`bucket` is `name:key`)."""

    __tablename__ = "rate_window"

    bucket: Mapped[str] = mapped_column(String(200), primary_key=True)
    start: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # window number
    hits: Mapped[int] = mapped_column(Integer)


@dataclass(frozen=True)
class Count:
    allowed: bool
    remaining: int
    reset: float  # seconds until a request is allowed again (refused), or the window turns


class Counter(Protocol):
    async def hit(self, key: str) -> Count: ...


class Limit:
    """One rule (`600/minute`, the `limits` notation), counted per key where `counts_in`
    says: `database` (bind it with `open`), or a `limits` storage URL."""

    def __init__(self, name: str, rule: str, counts_in: str) -> None:
        self.name = name
        self.item: RateLimitItem = parse(rule)
        self.counter: Counter = (
            DatabaseCounter(name, self.item)
            if counts_in == "database"
            else LimitsCounter(name, self.item, counts_in)
        )

    def open(self, engine: AsyncEngine) -> None:
        if isinstance(self.counter, DatabaseCounter):
            self.counter.engine = engine

    async def hit(self, key: str) -> Verdict:
        count = await self.counter.hit(key)
        reset = max(0, math.ceil(count.reset))
        window = self.item.get_expiry()
        return Verdict(
            count.allowed,
            f'"{self.name}";q={self.item.amount};w={window}',
            f'"{self.name}";r={count.remaining};t={reset}',
            max(1, reset),
        )


class LimitsCounter:
    """Memory or Redis, through the `limits` library's sliding window counter."""

    def __init__(self, name: str, item: RateLimitItem, storage_url: str) -> None:
        self.name = name
        self.item = item
        # redis-py: the common client (`pip install imagesync[redis]`).
        options = {"implementation": "redispy"} if storage_url.startswith("redis") else {}
        storage = storage_from_string(f"async+{storage_url}", **options)
        self.limiter = SlidingWindowCounterRateLimiter(storage)

    async def hit(self, key: str) -> Count:
        allowed = await self.limiter.hit(self.item, self.name, key)
        stats = await self.limiter.get_window_stats(self.item, self.name, key)
        return Count(allowed, stats.remaining, stats.reset_time - time.time())


# One statement: the previous window's count, then this window's count raised by one
# only while the weighted sum stays within the limit (the row lock makes that exact
# across processes), then the count as it stands.
_HIT = text("""
WITH previous AS (
    SELECT coalesce(max(hits), 0) AS hits FROM rate_window
    WHERE bucket = :bucket AND start = :start - 1
), taken AS (
    INSERT INTO rate_window AS w (bucket, start, hits)
    SELECT :bucket, :start, 1 FROM previous WHERE floor(previous.hits * :weight) + 1 <= :amount
    ON CONFLICT (bucket, start) DO UPDATE SET hits = w.hits + 1
    WHERE floor((SELECT hits FROM previous) * :weight) + w.hits + 1 <= :amount
    RETURNING w.hits
)
SELECT (SELECT hits FROM taken) AS taken,
       (SELECT hits FROM previous) AS previous,
       (SELECT hits FROM rate_window WHERE bucket = :bucket AND start = :start) AS current
""")
_FORGET = text("DELETE FROM rate_window WHERE bucket LIKE :name AND start < :start - 1")


class DatabaseCounter:
    """Counts in PostgreSQL's `rate_window`; windows no longer in view are deleted by
    each process at most once a window."""

    def __init__(self, name: str, item: RateLimitItem) -> None:
        self.name = name
        self.amount = item.amount
        self.window = item.get_expiry()
        self.engine: AsyncEngine | None = None
        self._forgot = -1

    async def hit(self, key: str) -> Count:
        if self.engine is None:
            raise RuntimeError("DatabaseCounter used before Limit.open")
        now = time.time()
        start, into = divmod(now, self.window)
        weight = 1 - into / self.window
        # Autocommit: each statement is its own transaction, without BEGIN and COMMIT
        # round trips.
        async with self.engine.connect() as plain:
            connection = await plain.execution_options(isolation_level="AUTOCOMMIT")
            if self._forgot < start:
                self._forgot = int(start)
                await connection.execute(_FORGET, {"name": f"{self.name}:%", "start": int(start)})
            row = (
                await connection.execute(
                    _HIT,
                    {
                        "bucket": f"{self.name}:{key}",
                        "start": int(start),
                        "weight": weight,
                        "amount": self.amount,
                    },
                )
            ).one()
        current = row.taken if row.taken is not None else row.current or 0
        return sliding_count(
            self.amount, self.window, row.previous, current, into, allowed=row.taken is not None
        )


def sliding_count(
    amount: int, window: float, previous: int, current: int, into: float, *, allowed: bool
) -> Count:
    """What is left, and when the next request is allowed (refused) or the window turns
    (allowed), `into` seconds into a window that counted `current` after a previous one
    that counted `previous`: the weighted sum is floor(previous * share of the previous
    window still in view) + current."""
    used = math.floor(previous * (1 - into / window)) + current
    remaining = max(0, amount - used)
    if allowed:
        return Count(True, remaining, window - into)
    if current >= amount:
        # The window turns; this one's count then weighs in until it is below `amount`.
        wait = window - into + max(0.0, window * (1 - amount / current))
    elif previous > 0:
        # Wait until floor(previous * (1 - (into + t) / window)) <= amount - current - 1,
        # that is previous * (1 - (into + t) / window) < amount - current.
        wait = window * (1 - (amount - current) / previous) - into
    else:  # counted meanwhile by another process; ask again soon
        wait = 0.0
    return Count(False, remaining, max(0.0, wait))


def limit_or_none(name: str, rule: str, counts_in: str) -> Limit | None:
    """The limit a setting describes; None for `0` (off)."""
    return None if rule.strip() in ("", "0") else Limit(name, rule, counts_in)


class TokenRateLimit:
    """Counts every request that presents a bearer token, per token (its hash), before
    anything else reads it; adds the headers to every answer it counted."""

    def __init__(self, app: ASGIApp, limit: Limit | None) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = _bearer(scope) if scope["type"] == "http" and self.limit is not None else None
        if token is None or self.limit is None:
            await self.app(scope, receive, send)
            return
        verdict = await self.limit.hit(hashlib.sha256(token).hexdigest())
        if not verdict.allowed:
            await _refuse(send, verdict)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], *verdict.headers()]}
            await send(message)

        await self.app(scope, receive, with_headers)


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            token = token.strip()
            return token if scheme.lower() == b"bearer" and token else None
    return None


async def _refuse(send: Send, verdict: Verdict) -> None:
    error = TooManyRequests(
        f"Over the rate limit of this token; send it again in {verdict.retry_after} s"
    )
    body = ErrorResponse(errors=error.to_objects()).model_dump_json(exclude_none=True).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *verdict.headers(),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})
