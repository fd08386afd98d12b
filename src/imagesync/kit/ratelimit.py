"""Rate limits: per API token on every API request, per client address on sign-in.

Counted with the `limits` library (a sliding window), in this process's memory or in
Redis (`IMAGESYNC_RATE_LIMIT_STORAGE=redis://...`), where every process of a deployment
shares the count. Every answer to a counted request carries the IETF draft headers
(`RateLimit-Policy: "token";q=600;w=60` and `RateLimit: "token";r=598;t=42`); one over
the limit is a 429 in TRAEDE's error shape with `Retry-After`, before any other work.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class Limit:
    """One rule (`600/minute`, the `limits` notation), counted per key in `storage`."""

    def __init__(self, name: str, rule: str, storage_url: str) -> None:
        self.name = name
        self.item: RateLimitItem = parse(rule)
        # redis-py: the common client (`pip install imagesync[redis]`).
        options = {"implementation": "redispy"} if storage_url.startswith("redis") else {}
        storage = storage_from_string(f"async+{storage_url}", **options)
        self.limiter = SlidingWindowCounterRateLimiter(storage)

    async def hit(self, key: str) -> Verdict:
        allowed = await self.limiter.hit(self.item, self.name, key)
        stats = await self.limiter.get_window_stats(self.item, self.name, key)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        window = self.item.get_expiry()
        return Verdict(
            allowed,
            f'"{self.name}";q={self.item.amount};w={window}',
            f'"{self.name}";r={stats.remaining};t={reset}',
            max(1, reset),
        )


def limit_or_none(name: str, rule: str, storage_url: str) -> Limit | None:
    """The limit a setting describes; None for `0` (off)."""
    return None if rule.strip() in ("", "0") else Limit(name, rule, storage_url)


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
