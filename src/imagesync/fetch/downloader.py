"""The downloader: streams a URL to a temporary file, safely and with limits."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import os
import random
import shutil
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, overload

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver
from yarl import URL

from imagesync.fetch.errors import (
    AddressRefused,
    BadRedirect,
    ConnectionFailed,
    DownloadTimeout,
    FetchError,
    HttpStatusError,
    InvalidUrl,
    RedirectLoop,
    StagingFailed,
    TooLarge,
    TooManyRedirects,
    UnsupportedEncoding,
)
from imagesync.fetch.guard import (
    DEFAULT_PORTS,
    IPAddress,
    check_url,
    host_address,
    is_forbidden,
)
from imagesync.fetch.resolver import GuardedResolver, RefusedByGuard

log = structlog.get_logger(__name__)

_REDIRECTS = {301, 302, 303, 307, 308}
_CHUNK = 64 * 1024
_WRITE_BATCH = 1024 * 1024  # bytes read before they are hashed and written in a thread


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 50 * 1024 * 1024
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    total_timeout: float = 120.0  # one attempt, all redirects and the whole body included
    max_redirects: int = 5
    retries: int = 3
    backoff_base: float = 0.5
    backoff_cap: float = 10.0
    retry_after_cap: float = 30.0
    concurrency: int = 8
    per_host_concurrency: int = 4
    # Downloads at once of one share (an account): another share always finds room.
    per_share_concurrency: int = 8
    ports: frozenset[int] = DEFAULT_PORTS


@dataclass(frozen=True)
class Answer:
    """What an endpoint answered a `SafeFetcher.post`: its status, and the start of its
    body."""

    status: int
    body: str


ANSWER_EXCERPT = 1024  # bytes of an answer's body kept


@dataclass(frozen=True)
class Validators:
    """What an origin said of a body it sent, to ask it later whether that changed
    (RFC 9110's `ETag` and `Last-Modified`)."""

    etag: str | None = None
    last_modified: str | None = None

    def conditions(self) -> dict[str, str]:
        """The headers of a conditional GET: the body only if it is not this one."""
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> Validators:
        etag = headers.get("ETag") or None
        modified = headers.get("Last-Modified") or None
        return cls(
            etag[:1024] if etag else None,
            modified if modified and len(modified) <= 64 else None,
        )


@dataclass(frozen=True)
class Download:
    path: Path
    size: int
    sha256: str
    final_url: str
    validators: Validators = field(default_factory=Validators)


@dataclass(frozen=True)
class NotModified:
    """The origin answered a conditional GET with 304: the body it sent before is still
    its current one."""

    final_url: str


class SafeFetcher:
    """One per process: a shared aiohttp session whose resolver refuses special
    addresses, redirects followed hop by hop, bounded size, time and concurrency.

    With `proxy`, requests go through that HTTP proxy (environment proxies are never
    used); names are still resolved and checked here first, and the proxy should
    refuse private destinations itself, since it resolves them again."""

    def __init__(
        self,
        *,
        allow: frozenset[tuple[str, int]] = frozenset(),
        limits: FetchLimits | None = None,
        temp_dir: Path | None = None,
        proxy: str | None = None,
        resolver: AbstractResolver | None = None,
        forbidden: Callable[[IPAddress], bool] = is_forbidden,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.limits = limits or FetchLimits()
        self.temp_dir = temp_dir
        self.proxy = URL(proxy) if proxy else None
        if self.proxy is not None and self.proxy.host and self.proxy.port:
            allow = allow | {(self.proxy.host.lower(), self.proxy.port)}
        self.allow = allow
        self._resolver = GuardedResolver(allow, resolver, forbidden=forbidden)
        # Certificates are checked against the URL's host name (and sent as SNI), never
        # against the address connected to; `tls` replaces the system's trusted CAs.
        self._tls: ssl.SSLContext | bool = tls if tls is not None else True
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(self.limits.concurrency)
        self._host_slots = KeyedSlots(self.limits.per_host_concurrency)
        self._share_slots = KeyedSlots(self.limits.per_share_concurrency)

    async def __aenter__(self) -> SafeFetcher:
        connector = aiohttp.TCPConnector(
            resolver=self._resolver,
            limit=self.limits.concurrency * 2,
            ttl_dns_cache=30,
            ssl=self._tls,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,  # environment proxies would bypass the address checks
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(
                sock_connect=self.limits.connect_timeout, sock_read=self.limits.read_timeout
            ),
            headers={
                "User-Agent": "imagesync/0.1 (+image sync)",
                "Accept": "image/*",
                "Accept-Encoding": "identity",  # the stored bytes are the origin's bytes
            },
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @overload
    async def fetch(self, url: str, *, share: str = "") -> Download: ...

    @overload
    async def fetch(
        self, url: str, *, share: str = "", unless: Validators | None
    ) -> Download | NotModified: ...

    async def fetch(
        self, url: str, *, share: str = "", unless: Validators | None = None
    ) -> Download | NotModified:
        """Download `url`, retrying transient failures with capped, jittered backoff
        (or the origin's `Retry-After`, up to a cap). Downloads of one `share` (an
        account) take at most `per_share_concurrency` slots, and at most
        `per_host_concurrency` from one host: a share's slow origin holds only its own
        slots, and the slots are taken in that order, so a share waiting for its own
        holds none of the others'.

        `unless` makes it a conditional GET: `NotModified` when the origin says its body
        is still the one these validators describe (a 304)."""
        first = check_url(url, allow=self.allow, ports=self.limits.ports)
        host = first.raw_host or ""
        attempt = 0
        while True:
            try:
                async with (
                    self._share_slots.slot(share),
                    self._host_slots.slot(f"{share}|{host}"),
                    self._slots,
                ):
                    try:
                        async with asyncio.timeout(self.limits.total_timeout):
                            staged = await asyncio.to_thread(self._stage)
                            return await self._fetch_once(first, *staged, unless)
                    except TimeoutError as exc:
                        raise DownloadTimeout(
                            f"the download took longer than {self.limits.total_timeout:g} s"
                        ) from exc
            except FetchError as exc:
                if not exc.retryable or attempt >= self.limits.retries:
                    raise
                delay = self._delay(attempt, exc)
                log.info("fetch.retry", url=url, code=exc.code, attempt=attempt + 1, delay=delay)
                attempt += 1
                await asyncio.sleep(delay)

    def _delay(self, attempt: int, exc: FetchError) -> float:
        delay = min(self.limits.backoff_cap, self.limits.backoff_base * 2.0**attempt)
        delay *= 0.5 + random.random() / 2
        retry_after = exc.retry_after if isinstance(exc, HttpStatusError) else None
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.limits.retry_after_cap))
        return delay

    def _stage(self) -> tuple[Path, BinaryIO]:
        """The file the body will go to, made and opened before any byte is asked for,
        on a disk with room for the largest download: a read-only or full disk then
        costs no download."""
        try:
            free = shutil.disk_usage(self.temp_dir or tempfile.gettempdir()).free
            if free < self.limits.max_bytes:
                raise StagingFailed(
                    "not enough free space on the server to stage a download",
                    internal=f"{self.temp_dir}: {free} bytes free, {self.limits.max_bytes} needed",
                )
            fd, name = tempfile.mkstemp(dir=self.temp_dir, prefix="dl-")
        except OSError as exc:
            raise StagingFailed(
                "could not stage a download on the server", internal=f"{self.temp_dir}: {exc}"
            ) from exc
        return Path(name), os.fdopen(fd, "wb")

    async def _fetch_once(
        self, current: URL, staged: Path, handle: BinaryIO, unless: Validators | None
    ) -> Download | NotModified:
        try:
            got = await self._follow(current, staged, handle, unless)
        except BaseException:
            handle.close()
            staged.unlink(missing_ok=True)
            raise
        if isinstance(got, NotModified):
            handle.close()
            staged.unlink(missing_ok=True)
        return got

    async def _follow(
        self, current: URL, staged: Path, handle: BinaryIO, unless: Validators | None
    ) -> Download | NotModified:
        assert self._session is not None, "use SafeFetcher as an async context manager"
        conditions = unless.conditions() if unless is not None else {}
        seen = {str(current)}
        for _hop in range(self.limits.max_redirects + 1):
            if self.proxy is not None:
                await self._check_name(current)
            with _translated(current):
                async with self._session.get(
                    current, allow_redirects=False, proxy=self.proxy, headers=conditions
                ) as response:
                    if response.status == 304 and conditions:
                        return NotModified(str(current))
                    if response.status in _REDIRECTS:
                        current = self._next_hop(current, response)
                        if str(current) in seen:
                            raise RedirectLoop(f"the redirects come back to {current}")
                        seen.add(str(current))
                        continue
                    if response.status != 200:
                        raise HttpStatusError(
                            response.status,
                            retry_after=parse_retry_after(response.headers.get("Retry-After")),
                        )
                    encoding = response.headers.get("Content-Encoding", "identity").lower()
                    if encoding != "identity":
                        raise UnsupportedEncoding(
                            f"the body is {encoding}-encoded although only identity was asked for"
                        )
                    return await self._save(response, str(current), staged, handle)
        raise TooManyRedirects(f"more than {self.limits.max_redirects} redirects")

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, timeout: float
    ) -> Answer:
        """POST `body` (JSON) to `url` once, under the same address checks as a download;
        a redirect is not followed (it is the answer), and nothing is retried (the
        caller's queue is). `FetchError` when no answer came within `timeout` seconds."""
        assert self._session is not None, "use SafeFetcher as an async context manager"
        target = check_url(url, allow=self.allow, ports=self.limits.ports)
        if self.proxy is not None:
            await self._check_name(target)
        sent = {**headers, "Content-Type": "application/json", "Accept": "*/*"}
        try:
            async with asyncio.timeout(timeout):
                with _translated(target):
                    async with self._session.post(
                        target, data=body, headers=sent, allow_redirects=False, proxy=self.proxy
                    ) as response:
                        excerpt = await response.content.read(ANSWER_EXCERPT)
        except TimeoutError as exc:
            raise DownloadTimeout(f"{target.host} did not answer within {timeout:g} s") from exc
        return Answer(response.status, excerpt.decode("utf-8", "replace"))

    def _next_hop(self, current: URL, response: aiohttp.ClientResponse) -> URL:
        location = response.headers.get("Location")
        if not location:
            raise BadRedirect(f"redirect {response.status} without Location")
        try:
            target = str(current.join(URL(location)))
        except (ValueError, TypeError) as exc:
            raise BadRedirect(f"the redirect goes to {location!r}, which is not a URL") from exc
        try:
            return check_url(target, allow=self.allow, ports=self.limits.ports)
        except InvalidUrl as exc:
            raise BadRedirect(f"the redirect goes to {location!r}: {exc.detail}") from exc

    async def _check_name(self, url: URL) -> None:
        """Through a proxy the connector never resolves the origin: check it here."""
        host = url.raw_host or ""
        if host_address(host) is None:  # an IP host was judged by check_url already
            try:
                await self._resolver.resolve(host, url.port or 0)
            except RefusedByGuard as exc:
                raise AddressRefused(str(exc)) from exc
            except OSError as exc:
                raise ConnectionFailed(
                    f"could not resolve {host}: {_reason(exc)}", internal=str(exc)
                ) from exc

    async def _save(
        self, response: aiohttp.ClientResponse, final_url: str, path: Path, handle: BinaryIO
    ) -> Download:
        limit = self.limits.max_bytes
        if response.content_length is not None and response.content_length > limit:
            raise TooLarge(f"{response.content_length} bytes is over the limit of {limit}")
        digest = hashlib.sha256()
        size = 0
        # The body is hashed and written a megabyte at a time in a thread (hashlib lets go
        # of the GIL): the event loop only reads the socket, and most images take one trip
        # to the thread, the last, which closes the file (a trip waits for a turn of the
        # loop, which runs the work's transactions too).
        pending: list[bytes] = []
        buffered = 0
        try:
            async for chunk in response.content.iter_chunked(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"the body is over the limit of {limit} bytes")
                pending.append(chunk)
                buffered += len(chunk)
                if buffered >= _WRITE_BATCH:
                    await asyncio.to_thread(_hash_and_write, digest, handle, pending, path)
                    pending, buffered = [], 0
            await asyncio.to_thread(_hash_and_write, digest, handle, pending, path, close=True)
        finally:
            if not handle.closed:
                handle.close()
        if response.content_length is not None and size < response.content_length:
            raise ConnectionFailed(
                f"the body ended after {size} of {response.content_length} bytes"
            )
        return Download(
            path=path,
            size=size,
            sha256=digest.hexdigest(),
            final_url=final_url,
            validators=Validators.of(response.headers),
        )


def _hash_and_write(
    digest: hashlib._Hash, handle: BinaryIO, chunks: list[bytes], path: Path, *, close: bool = False
) -> None:
    try:
        for chunk in chunks:
            digest.update(chunk)
            handle.write(chunk)
        if close:
            handle.close()
    except OSError as exc:
        raise StagingFailed(
            "could not stage a download on the server", internal=f"{path}: {exc}"
        ) from exc


@contextlib.contextmanager
def _translated(url: URL) -> Iterator[None]:
    """aiohttp's failures of one request to `url`, as the downloader's errors."""
    try:
        yield
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, RefusedByGuard):
            raise AddressRefused(str(exc.os_error)) from exc
        raise ConnectionFailed(
            f"could not connect to {url.host}: {_reason(exc.os_error)}",
            internal=str(exc.os_error),
        ) from exc
    except TimeoutError as exc:  # connect or read: the total deadline is the caller's
        raise DownloadTimeout(f"{url.host} did not answer in time") from exc
    except aiohttp.InvalidURL as exc:
        raise InvalidUrl(f"{url} is not a URL that can be fetched") from exc
    except aiohttp.ClientPayloadError as exc:
        raise ConnectionFailed(f"the body was cut short: {exc}") from exc
    except aiohttp.ClientError as exc:
        raise ConnectionFailed(str(exc) or type(exc).__name__) from exc


def _reason(error: BaseException) -> str:
    """What went wrong in a connect or a name look-up, in words that name no address (an
    `OSError`'s text often names the address it tried)."""
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, socket.gaierror):
        return "no such host" if error.errno == socket.EAI_NONAME else "name look-up failed"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate verify failed ({error.verify_message})"
    if isinstance(error, ssl.SSLError):
        return "TLS handshake failed"
    if isinstance(error, OSError) and error.errno is not None:
        return os.strerror(error.errno).lower()
    return type(error).__name__


class KeyedSlots:
    """At most `size` holders at once per key (an origin host, a share). A key's
    semaphore exists only while someone holds or waits for it, so the table never grows
    with the keys seen."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._slots: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @contextlib.asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        semaphore, users = self._slots.get(host, (asyncio.Semaphore(self.size), 0))
        self._slots[host] = (semaphore, users + 1)
        try:
            async with semaphore:
                yield
        finally:
            semaphore, users = self._slots[host]
            if users == 1:
                del self._slots[host]
            else:
                self._slots[host] = (semaphore, users - 1)

    def __len__(self) -> int:
        return len(self._slots)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
