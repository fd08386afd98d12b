"""The downloader: streams a URL to a temporary file, safely and with limits."""

from __future__ import annotations

import asyncio
import hashlib
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import structlog
from yarl import URL

from imagesync.fetch.errors import (
    AddressRefused,
    BadRedirect,
    ConnectionFailed,
    DownloadTimeout,
    FetchError,
    HttpStatusError,
    InvalidUrl,
    TooLarge,
    TooManyRedirects,
)
from imagesync.fetch.guard import GuardedResolver, RefusedByGuard, check_literal

log = structlog.get_logger(__name__)

_REDIRECTS = {301, 302, 303, 307, 308}
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 50 * 1024 * 1024
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    total_timeout: float = 120.0
    max_redirects: int = 5
    retries: int = 3
    backoff_base: float = 0.5
    backoff_cap: float = 10.0
    concurrency: int = 8


@dataclass(frozen=True)
class Download:
    path: Path
    size: int
    sha256: str
    final_url: str


class SafeFetcher:
    """One per process: a shared aiohttp session whose resolver refuses special
    addresses, redirects followed hop by hop, bounded size, time and concurrency."""

    def __init__(
        self,
        *,
        allow: frozenset[tuple[str, int]] = frozenset(),
        limits: FetchLimits | None = None,
        temp_dir: Path | None = None,
    ) -> None:
        self.allow = allow
        self.limits = limits or FetchLimits()
        self.temp_dir = temp_dir
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(self.limits.concurrency)

    async def __aenter__(self) -> SafeFetcher:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self.allow), limit=self.limits.concurrency * 2
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,  # environment proxies would bypass the address checks
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(
                total=self.limits.total_timeout,
                sock_connect=self.limits.connect_timeout,
                sock_read=self.limits.read_timeout,
            ),
            headers={"User-Agent": "imagesync/0.1 (+image sync)", "Accept": "image/*"},
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def fetch(self, url: str) -> Download:
        """Download `url`, retrying transient failures with capped, jittered backoff."""
        attempt = 0
        while True:
            try:
                async with self._slots:
                    return await self._fetch_once(url)
            except FetchError as exc:
                if not exc.retryable or attempt >= self.limits.retries:
                    raise
                delay = min(self.limits.backoff_cap, self.limits.backoff_base * 2**attempt)
                delay *= 0.5 + random.random() / 2
                log.info("fetch.retry", url=url, code=exc.code, attempt=attempt + 1, delay=delay)
                attempt += 1
                await asyncio.sleep(delay)

    async def _fetch_once(self, url: str) -> Download:
        assert self._session is not None, "use SafeFetcher as an async context manager"
        current = _parse(url)
        for _hop in range(self.limits.max_redirects + 1):
            refusal = check_literal(current.host or "", current.port or 0, self.allow)
            if refusal:
                raise AddressRefused(refusal)
            try:
                async with self._session.get(current, allow_redirects=False) as response:
                    if response.status in _REDIRECTS:
                        location = response.headers.get("Location")
                        if not location:
                            raise BadRedirect(f"redirect {response.status} without Location")
                        current = _parse(str(current.join(URL(location))), redirect=True)
                        continue
                    if response.status != 200:
                        raise HttpStatusError(response.status)
                    return await self._save(response, str(current))
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, RefusedByGuard):
                    raise AddressRefused(str(exc.os_error)) from exc
                raise ConnectionFailed(
                    f"could not connect to {current.host}: {exc.os_error}"
                ) from exc
            except TimeoutError as exc:
                raise DownloadTimeout("the origin did not answer in time") from exc
            except aiohttp.ClientPayloadError as exc:
                raise ConnectionFailed(f"the body was cut short: {exc}") from exc
            except aiohttp.ClientError as exc:
                raise ConnectionFailed(str(exc) or type(exc).__name__) from exc
        raise TooManyRedirects(f"more than {self.limits.max_redirects} redirects")

    async def _save(self, response: aiohttp.ClientResponse, final_url: str) -> Download:
        limit = self.limits.max_bytes
        if response.content_length is not None and response.content_length > limit:
            raise TooLarge(f"{response.content_length} bytes is over the limit of {limit}")
        digest = hashlib.sha256()
        size = 0
        handle = tempfile.NamedTemporaryFile(dir=self.temp_dir, prefix="dl-", delete=False)
        path = Path(handle.name)
        try:
            with handle:
                async for chunk in response.content.iter_chunked(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge(f"the body is over the limit of {limit} bytes")
                    digest.update(chunk)
                    handle.write(chunk)
            if response.content_length is not None and size < response.content_length:
                raise ConnectionFailed(
                    f"the body ended after {size} of {response.content_length} bytes"
                )
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return Download(path=path, size=size, sha256=digest.hexdigest(), final_url=final_url)


def _parse(url: str, *, redirect: bool = False) -> URL:
    error = BadRedirect if redirect else InvalidUrl
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise error(f"{url!r} is not a URL") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise error(f"{url!r} is not an absolute http(s) URL")
    if parsed.user is not None or parsed.password is not None:
        raise error("URLs with credentials are refused")
    return parsed
