"""The downloader against hostile origins and hostile DNS. Servers run on 127.0.0.1,
DNS is faked, and the tripwire shows every connection attempted: in each refusal case
no connection went to a forbidden address (none went anywhere but the origin)."""

from __future__ import annotations

import asyncio
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from structlog.testing import capture_logs

from imagesync.fetch.downloader import Download, NotModified, Validators, parse_retry_after
from imagesync.fetch.errors import FetchError
from tests.conftest import Tripwire
from tests.fetch.conftest import (
    JPEG,
    FakeDNS,
    Origin,
    failure,
    fetcher,
    public_fetcher,
    treat_as_public,
)

# -- the happy path -----------------------------------------------------------------------


async def test_a_plain_download_lands_in_a_temporary_file(
    origin: Origin, tmp_path: Path, tripwire: Tripwire
) -> None:
    async with fetcher(origin, tmp_path) as f:
        download = await f.fetch(origin.url("/ok.jpg"))
    assert download.path.read_bytes() == JPEG
    assert download.size == len(JPEG)
    assert download.path.parent == tmp_path
    assert tripwire.attempts == [("127.0.0.1", origin.port)]


async def test_a_conditional_get_is_not_modified_when_the_origin_says_so(
    origin: Origin, tmp_path: Path
) -> None:
    """A refresh asks with what the origin said of its body; a 304 leaves no file, and
    the conditions are sent again at the redirect's target."""
    async with fetcher(origin, tmp_path) as f:
        first = await f.fetch(origin.url("/validated.jpg"))
        assert first.validators == Validators('"v1"', "Mon, 30 Nov 2026 10:00:00 GMT")
        first.path.unlink()
        same = await f.fetch(origin.url("/validated.jpg"), unless=first.validators)
        assert same == NotModified(origin.url("/validated.jpg"))
        via = origin.url("/redirect?to=/validated.jpg")
        assert isinstance(await f.fetch(via, unless=first.validators), NotModified)
        other = await f.fetch(origin.url("/validated.jpg"), unless=Validators('"v0"'))
        assert isinstance(other, Download)
        assert other.path.read_bytes() == JPEG
        unconditional = await f.fetch(origin.url("/validated.jpg"), unless=Validators())
        assert isinstance(unconditional, Download)
    assert origin.conditions == [
        (None, None),
        ('"v1"', "Mon, 30 Nov 2026 10:00:00 GMT"),
        ('"v1"', "Mon, 30 Nov 2026 10:00:00 GMT"),
        ('"v0"', None),
        (None, None),
    ]
    assert set(tmp_path.iterdir()) == {other.path, unconditional.path}


async def test_a_304_to_a_plain_get_is_an_error(origin: Origin, tmp_path: Path) -> None:
    error = await failure(fetcher(origin, tmp_path), origin.url("/status/304"))
    assert error.code == "download_http_error"


async def test_bodies_are_never_decompressed(origin: Origin, tmp_path: Path) -> None:
    error = await failure(fetcher(origin, tmp_path, retries=2), origin.url("/gzip.jpg"))
    assert error.code == "unsupported_encoding"
    assert origin.hits["/gzip.jpg"] == 1
    assert origin.encodings == ["identity"]  # and it was asked for the bytes as they are


# -- forbidden addresses: directly, by name, via redirect --------------------------------

METADATA = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"


@pytest.mark.parametrize(
    "url",
    [
        METADATA,
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://127.0.0.1/x.jpg",
        "http://10.0.0.8:8080/x.jpg",
        "http://[::1]/x.jpg",
        "http://[::ffff:127.0.0.1]/x.jpg",
        "http://[::ffff:a9fe:a9fe]/x.jpg",
        "http://[64:ff9b::7f00:1]/x.jpg",
        "http://[2002:a9fe:a9fe::]/x.jpg",
        "http://2130706433/x.jpg",
        "http://0x7f000001/x.jpg",
        "http://0177.0.0.1/x.jpg",
        "http://127.1/x.jpg",
        "http://2852039166/x.jpg",
        "http://0/x.jpg",
    ],
)
async def test_forbidden_addresses_are_refused_before_connecting(
    url: str, tmp_path: Path, tripwire: Tripwire
) -> None:
    dns = FakeDNS({})
    error = await failure(fetcher(None, tmp_path, dns=dns), url)
    assert error.code == "address_refused"
    assert tripwire.attempts == []
    assert not dns.lookups


@pytest.mark.parametrize(
    "answers",
    [
        ["127.0.0.1"],
        ["169.254.169.254"],
        ["10.1.2.3"],
        ["100.64.0.1"],
        ["::1"],
        ["fd00:ec2::254"],
        ["::ffff:192.168.0.1"],
        ["64:ff9b::a9fe:a9fe"],
        ["0.0.0.0"],
        ["8.8.8.8", "127.0.0.1"],  # a public answer beside a private one: refused
        ["2606:4700::1111", "fe80::1"],
    ],
)
async def test_names_resolving_to_forbidden_addresses_are_refused(
    answers: list[str], tmp_path: Path, tripwire: Tripwire
) -> None:
    dns = FakeDNS({"images.example": answers})
    with capture_logs() as logs:
        error = await failure(fetcher(None, tmp_path, dns=dns), "http://images.example/x.jpg")
    assert error.code == "address_refused"
    assert tripwire.attempts == []
    assert dns.lookups["images.example"] == 1  # refusals are never retried
    # The tenant reads no DNS answer (no mapping of internal names); the operator does.
    assert error.detail == "images.example resolves to an address that is not public"
    assert not any(answer in error.detail for answer in answers if answer)
    refused = [e for e in logs if e["event"] == "fetch.address_refused"]
    assert refused
    assert refused[0]["address"] in answers


async def test_a_failed_connect_names_no_address(
    origin: Origin, tmp_path: Path, tripwire: Tripwire
) -> None:
    # Nobody listens on 127.0.0.3 (a stand-in for a public address).
    dns = FakeDNS({"down.example": ["127.0.0.3"]})
    f = fetcher(
        origin,
        tmp_path,
        dns=dns,
        forbidden=treat_as_public("127.0.0.3"),
        retries=0,
        ports=frozenset({origin.port}),
    )
    error = await failure(f, f"http://down.example:{origin.port}/x.jpg")
    assert error.code == "connection_error"
    assert error.detail == "could not connect to down.example: connection refused"
    assert error.internal is not None
    assert "127.0.0.3" in error.internal
    assert tripwire.hosts() == {"127.0.0.3"}


@pytest.mark.parametrize(
    "target",
    [
        METADATA,
        "http://127.0.0.1:9/x.jpg",  # loopback, but not the allowed pair
        "http://[::ffff:127.0.0.1]/x.jpg",
        "http://2130706433/x.jpg",
        "http://internal.example/x.jpg",  # a name that resolves to a private address
        "http://[fd00:ec2::254]/",
    ],
)
async def test_redirects_to_forbidden_addresses_are_refused(
    origin: Origin, target: str, tmp_path: Path, tripwire: Tripwire
) -> None:
    dns = FakeDNS({"internal.example": ["192.168.10.10"]})
    url = origin.url(f"/redirect?to={target}")
    error = await failure(fetcher(origin, tmp_path, dns=dns), url)
    assert error.code == "address_refused"
    assert tripwire.hosts() == {"127.0.0.1"}
    assert tripwire.forbidden_attempts() == [("127.0.0.1", origin.port)]  # the allowed origin


async def test_a_rebinding_name_is_connected_to_only_at_the_checked_address(
    origin: Origin, tmp_path: Path, tripwire: Tripwire
) -> None:
    # 127.0.0.2 stands in for a public address (still this machine); the name then
    # "rebinds" to 127.0.0.1. The connector must use the address that was checked.
    dns = FakeDNS({"rebind.example": [["127.0.0.2"], ["127.0.0.1"]]})
    f = fetcher(
        origin,
        tmp_path,
        dns=dns,
        forbidden=treat_as_public("127.0.0.2"),
        ports=frozenset({origin.port}),
    )
    async with f:
        with pytest.raises(FetchError) as caught:
            await f.fetch(f"http://rebind.example:{origin.port}/ok.jpg")
        assert caught.value.code == "connection_error"  # nobody listens on .2
        assert tripwire.hosts() == {"127.0.0.2"}
        f._session.connector._cached_hosts.clear()  # type: ignore[union-attr]  # TTL expiry
        with pytest.raises(FetchError) as again:
            await f.fetch(f"http://rebind.example:{origin.port}/ok.jpg")
    assert again.value.code == "address_refused"
    assert tripwire.hosts() == {"127.0.0.2"}  # never 127.0.0.1
    assert origin.hits["/ok.jpg"] == 0


# -- URLs that are not fetched ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://user:pw@images.example/x.jpg", "invalid_url"),
        ("file:///etc/passwd", "invalid_url"),
        ("gopher://images.example/x", "invalid_url"),
        ("http://images.example/x.jpg\r\nX-Evil: 1", "invalid_url"),
        ("http://images.example:25/x.jpg", "port_refused"),
        ("http://images.example:6379/x.jpg", "port_refused"),
    ],
)
async def test_urls_outside_the_rules_are_refused_before_resolving(
    url: str, code: str, tmp_path: Path, tripwire: Tripwire
) -> None:
    dns = FakeDNS({"images.example": ["127.0.0.1"]})
    error = await failure(fetcher(None, tmp_path, dns=dns), url)
    assert error.code == code
    assert tripwire.attempts == []
    assert not dns.lookups


# -- redirects ----------------------------------------------------------------------------


async def test_redirects_are_followed_hop_by_hop_up_to_five(origin: Origin, tmp_path: Path) -> None:
    async with fetcher(origin, tmp_path) as f:
        download = await f.fetch(origin.url("/chain/4"))  # five redirects
    assert download.final_url == origin.url("/ok.jpg")
    origin.hits.clear()
    error = await failure(fetcher(origin, tmp_path, retries=3), origin.url("/chain/5"))
    assert error.code == "too_many_redirects"
    assert origin.hits["/ok.jpg"] == 0
    assert sum(origin.hits.values()) == 6  # never retried


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/loop/a", "redirect_loop"),
        ("/redirect", "bad_redirect"),  # no Location
        ("/redirect?to=ftp://127.0.0.1/x", "bad_redirect"),
        ("/redirect?to=javascript:alert(1)", "bad_redirect"),
        ("/redirect?to=http://user:pw@images.example/", "bad_redirect"),
        ("/redirect?to=http://[zz", "bad_redirect"),
        ("/redirect?to=http://images.example:22/", "port_refused"),
    ],
)
async def test_broken_redirects_fail_with_clear_codes(
    origin: Origin, path: str, code: str, tmp_path: Path, tripwire: Tripwire
) -> None:
    error = await failure(fetcher(origin, tmp_path, retries=2), origin.url(path))
    assert error.code == code
    assert tripwire.hosts() == {"127.0.0.1"}


# -- sizes and time -----------------------------------------------------------------------


async def test_a_declared_oversize_body_fails_without_being_read(
    origin: Origin, tmp_path: Path
) -> None:
    start = time.monotonic()
    error = await failure(fetcher(origin, tmp_path, max_bytes=1000), origin.url("/huge"))
    assert error.code == "too_large"
    assert time.monotonic() - start < 5  # did not wait for the (never sent) body
    assert list(tmp_path.iterdir()) == []


async def test_an_endless_body_is_cut_off_at_the_cap(origin: Origin, tmp_path: Path) -> None:
    error = await failure(
        fetcher(origin, tmp_path, max_bytes=200_000, retries=2), origin.url("/endless")
    )
    assert error.code == "too_large"
    assert origin.hits["/endless"] == 1  # too large is final: never retried
    assert list(tmp_path.iterdir()) == []


async def test_a_drip_feeding_origin_fails_at_the_deadline(origin: Origin, tmp_path: Path) -> None:
    start = time.monotonic()
    error = await failure(
        fetcher(origin, tmp_path, total_timeout=1.0, read_timeout=5.0), origin.url("/drip")
    )
    elapsed = time.monotonic() - start
    assert error.code == "timeout"
    assert 0.9 <= elapsed < 3  # each byte came in time; the whole did not
    assert list(tmp_path.iterdir()) == []


async def test_a_silent_origin_times_out_and_is_retried(origin: Origin, tmp_path: Path) -> None:
    start = time.monotonic()
    error = await failure(
        fetcher(origin, tmp_path, total_timeout=5, read_timeout=0.3, retries=1),
        origin.url("/silent"),
    )
    assert error.code == "timeout"
    assert origin.hits["/silent"] == 2
    assert time.monotonic() - start < 4


async def test_a_body_shorter_than_its_content_length_fails(origin: Origin, tmp_path: Path) -> None:
    error = await failure(fetcher(origin, tmp_path), origin.url("/short"))
    assert error.code == "connection_error"
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


# -- retries ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [500, 502, 503, 408, 429])
async def test_transient_statuses_are_retried(code: int, origin: Origin, tmp_path: Path) -> None:
    async with fetcher(origin, tmp_path, retries=2) as f:
        download = await f.fetch(origin.url(f"/flaky/{code}"))
    assert download.path.read_bytes() == JPEG
    assert origin.hits[f"/flaky/{code}"] == 2


@pytest.mark.parametrize("code", [400, 401, 403, 404, 410, 451])
async def test_other_client_errors_are_not_retried(
    code: int, origin: Origin, tmp_path: Path
) -> None:
    error = await failure(fetcher(origin, tmp_path, retries=3), origin.url(f"/status/{code}"))
    assert error.code == "download_http_error"
    assert str(code) in error.detail
    assert origin.hits[f"/status/{code}"] == 1


async def test_a_compressed_error_page_is_judged_by_its_status(
    origin: Origin, tmp_path: Path
) -> None:
    error = await failure(
        fetcher(origin, tmp_path, retries=2), origin.url("/status/503?encoding=gzip")
    )
    assert error.code == "download_http_error"
    assert origin.hits["/status/503"] == 3  # a 503 is retried, whatever its body


async def test_retry_after_is_honoured(origin: Origin, tmp_path: Path) -> None:
    start = time.monotonic()
    async with fetcher(origin, tmp_path, retries=1, backoff_base=0.01) as f:
        await f.fetch(origin.url("/flaky/503?retry_after=1"))
    assert time.monotonic() - start >= 1.0
    assert origin.hits["/flaky/503"] == 2


async def test_retry_after_is_capped(origin: Origin, tmp_path: Path) -> None:
    start = time.monotonic()
    error = await failure(
        fetcher(origin, tmp_path, retries=2, retry_after_cap=0.2),
        origin.url("/status/503?retry_after=3600"),
    )
    assert error.code == "download_http_error"
    assert origin.hits["/status/503"] == 3
    assert time.monotonic() - start < 3


# -- concurrency and proxies --------------------------------------------------------------


async def test_concurrency_per_origin_host_is_bounded(origin: Origin, tmp_path: Path) -> None:
    async with fetcher(origin, tmp_path, concurrency=8, per_host_concurrency=2) as f:
        await asyncio.gather(*(f.fetch(origin.url(f"/slow.jpg?n={i}")) for i in range(6)))
    assert origin.hits["/slow.jpg"] == 6
    assert origin.peak == 2


async def test_environment_proxies_are_ignored(
    origin: Origin, tmp_path: Path, tripwire: Tripwire, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.9:3128")
    async with fetcher(origin, tmp_path) as f:
        await f.fetch(origin.url("/ok.jpg"))
    assert tripwire.attempts == [("127.0.0.1", origin.port)]


async def test_an_explicit_proxy_is_used_after_the_name_is_checked(
    origin: Origin, tmp_path: Path, tripwire: Tripwire
) -> None:
    # The origin doubles as the proxy: aiohttp sends it the absolute URL.
    dns = FakeDNS({"cdn.example": ["127.0.0.2"], "internal.example": ["10.0.0.5"]})
    proxy = f"http://127.0.0.1:{origin.port}"
    f = fetcher(None, tmp_path, dns=dns, proxy=proxy, forbidden=treat_as_public("127.0.0.2"))
    async with f:
        download = await f.fetch("http://cdn.example/ok.jpg")
        assert download.path.read_bytes() == JPEG
        with pytest.raises(FetchError) as refused:
            await f.fetch("http://internal.example/ok.jpg")
    assert refused.value.code == "address_refused"
    assert tripwire.hosts() == {"127.0.0.1"}  # only the proxy was ever connected to
    assert origin.hits["/ok.jpg"] == 1


async def test_the_checked_address_is_connected_to_with_the_name_as_host(
    tmp_path: Path, tripwire: Tripwire
) -> None:
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.host)
        return web.Response(body=JPEG, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/ok.jpg", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.2", 0).start()  # stands in for a public server
    port = runner.addresses[0][1]
    try:
        f, dns = public_fetcher(tmp_path, port, ["cdn.example"])
        async with f:
            download = await f.fetch(f"http://cdn.example:{port}/ok.jpg")
    finally:
        await runner.cleanup()
    assert download.path.read_bytes() == JPEG
    assert seen == [f"cdn.example:{port}"]
    assert tripwire.attempts == [("127.0.0.2", port)]
    assert dns.lookups["cdn.example"] == 1


async def test_per_host_slots_are_dropped_when_nobody_uses_them(
    origin: Origin, tmp_path: Path
) -> None:
    f = fetcher(origin, tmp_path, per_host_concurrency=1)
    async with f:
        await asyncio.gather(*(f.fetch(origin.url(f"/slow.jpg?n={i}")) for i in range(3)))
        assert len(f._host_slots) == 0
    assert origin.peak == 1


@pytest.mark.parametrize("attempt", range(8))
def test_backoff_is_capped_exponential_with_jitter(attempt: int, tmp_path: Path) -> None:
    f = fetcher(None, tmp_path, backoff_base=0.5, backoff_cap=10.0)
    full = min(10.0, 0.5 * 2**attempt)
    delays = [f._delay(attempt, FetchError("x")) for _ in range(200)]
    assert all(full / 2 <= d <= full for d in delays)
    assert max(delays) - min(delays) > full / 10  # jittered, not fixed


def test_retry_after_accepts_seconds_and_dates() -> None:
    from email.utils import format_datetime

    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    later = datetime.now(UTC) + timedelta(seconds=30)
    assert 25 < (parse_retry_after(format_datetime(later, usegmt=True)) or 0) <= 30


@pytest.fixture
def tls_ca() -> trustme.CA:
    return trustme.CA()


async def https_origin(ca: trustme.CA, name: str) -> tuple[web.AppRunner, int, list[str]]:
    """An HTTPS origin on 127.0.0.2 whose certificate is for `name` only."""
    server_names: list[str] = []

    async def ok(_r: web.Request) -> web.Response:
        return web.Response(body=JPEG, content_type="image/jpeg")

    def sni(_sock: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        server_names.append(server_name or "")

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    context.sni_callback = sni
    app = web.Application()
    app.router.add_get("/ok.jpg", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.2", 0, ssl_context=context).start()
    return runner, runner.addresses[0][1], server_names


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_https_certificates_are_checked_against_the_name_not_the_address(
    tmp_path: Path, tripwire: Tripwire, tls_ca: trustme.CA
) -> None:
    runner, port, _ = await https_origin(tls_ca, "cdn.example")
    try:
        f, _ = public_fetcher(
            tmp_path, port, ["cdn.example", "other.example"], tls=trusting(tls_ca)
        )
        async with f:
            download = await f.fetch(f"https://cdn.example:{port}/ok.jpg")
            assert download.path.read_bytes() == JPEG
            # Same address, another name: the certificate does not match it.
            with pytest.raises(FetchError) as caught:
                await f.fetch(f"https://other.example:{port}/ok.jpg")
    finally:
        await runner.cleanup()
    assert caught.value.code == "connection_error"
    assert "certificate" in caught.value.detail.lower()
    assert {a[0] for a in tripwire.attempts} == {"127.0.0.2"}


async def test_https_sends_the_name_as_sni_and_trusts_no_unknown_ca(
    tmp_path: Path, tls_ca: trustme.CA
) -> None:
    runner, port, server_names = await https_origin(tls_ca, "cdn.example")
    try:
        f, _ = public_fetcher(tmp_path, port, ["cdn.example"], tls=trusting(tls_ca))
        async with f:
            await f.fetch(f"https://cdn.example:{port}/ok.jpg")
        untrusting, _ = public_fetcher(tmp_path, port, ["cdn.example"])
        error = await failure(untrusting, f"https://cdn.example:{port}/ok.jpg")
    finally:
        await runner.cleanup()
    assert server_names[0] == "cdn.example"  # (the second handshake failed at our end)
    assert error.code == "connection_error"  # the system's CAs do not know this one
    assert "certificate" in error.detail.lower()
