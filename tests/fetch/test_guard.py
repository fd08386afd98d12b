"""Which addresses the downloader may reach. DNS answers are faked; nothing connects."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from imagesync.fetch.errors import FetchError
from imagesync.fetch.guard import (
    DEFAULT_PORTS,
    check_url,
    is_forbidden,
    parse_ipv4_number,
)
from imagesync.fetch.resolver import GuardedResolver, RefusedByGuard
from imagesync.kit.settings import parse_allow_list, parse_ports

FORBIDDEN = [
    # IPv4
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "100.64.0.1",
    "100.127.255.254",
    "127.0.0.1",
    "127.1.2.3",
    "169.254.169.254",
    "172.16.5.4",
    "172.31.255.255",
    "192.0.0.9",  # is_global says True on Python 3.11
    "192.0.0.170",
    "192.0.2.1",
    "192.88.99.1",
    "192.168.1.1",
    "198.18.0.1",
    "198.19.255.255",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    # IPv6
    "::",
    "::1",
    "fe80::1",
    "fc00::1",
    "fd00:ec2::254",
    "fec0::1",
    "ff02::1",
    "100::1",
    "2001:db8::1",  # is_global says True on Python 3.11
    "2001:2::1",
    "2001:10::1",
    "2001:20::1",
    "3fff::1",
    "5f00::1",
    # IPv4 hidden in IPv6
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # compatible
    "::8.8.8.8",  # compatible forms are deprecated: all refused
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::808:808",  # local-use NAT64
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
]


@pytest.mark.parametrize("address", FORBIDDEN)
def test_special_addresses_are_forbidden(address: str) -> None:
    assert is_forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "2606:4700::1111",
        "2a00:1450:4001:80b::200e",
        "::ffff:8.8.8.8",  # mapped: the packet goes to 8.8.8.8
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    ],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert not is_forbidden(ipaddress.ip_address(address))


@given(st.ip_addresses(v=4))
def test_every_ipv4_address_is_judged_the_same_hidden_in_ipv6(
    address: ipaddress.IPv4Address,
) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    nat64 = ipaddress.IPv6Address((0x64FF9B << 96) | int(address))
    six_to_four = ipaddress.IPv6Address((0x2002 << 112) | (int(address) << 80) | 1)
    verdict = is_forbidden(address)
    assert is_forbidden(mapped) == verdict
    assert is_forbidden(nat64) == verdict
    assert is_forbidden(six_to_four) == verdict


@given(st.ip_addresses())
def test_nothing_python_calls_non_global_is_allowed(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    if not address.is_global or address.is_multicast:
        assert is_forbidden(address)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7F.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("2852039166", "169.254.169.254"),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("10.1", "10.0.0.1"),
        ("8.8.8.8", "8.8.8.8"),
        ("134744072", "8.8.8.8"),
    ],
)
def test_numeric_spellings_mean_what_inet_aton_says(host: str, address: str) -> None:
    assert parse_ipv4_number(host) == ipaddress.IPv4Address(address)
    socket_says = socket.inet_ntoa(socket.inet_aton(host)) if host != "0" else "0.0.0.0"
    assert socket_says == address


@pytest.mark.parametrize("host", ["images.test", "1.2.3.4.example", "cdn-1.example.com", "0x.com"])
def test_names_are_not_numbers(host: str) -> None:
    assert parse_ipv4_number(host) is None


@pytest.mark.parametrize(
    "host", ["256.0.0.1", "1.2.3.4.5", "4294967296", "0x1ffffffff", "1.2.3.09"]
)
def test_out_of_range_numbers_are_invalid(host: str) -> None:
    with pytest.raises(ValueError, match="IPv4"):
        parse_ipv4_number(host)


def refusal(url: str, allow: frozenset[tuple[str, int]] = frozenset()) -> str | None:
    try:
        check_url(url, allow=allow, ports=DEFAULT_PORTS)
    except FetchError as exc:
        return exc.code
    return None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.jpg",
        "http://2130706433/x.jpg",
        "http://0x7f000001/x.jpg",
        "http://0177.0.0.1/x.jpg",
        "http://127.1/x.jpg",
        "http://0/x.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/latest/meta-data/",
        "http://[::1]/x.jpg",
        "http://[::]/x.jpg",
        "http://[::ffff:127.0.0.1]/x.jpg",
        "http://[::ffff:7f00:1]/x.jpg",
        "http://[::ffff:169.254.169.254]/x.jpg",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[64:ff9b::a9fe:a9fe]/x.jpg",
        "http://[2002:7f00:1::1]/x.jpg",
        "http://[fe80::1]/x.jpg",
        "https://10.0.0.1/x.jpg",
        "http://192.168.0.1:8080/x.jpg",
    ],
)
def test_forbidden_addresses_in_any_spelling_are_refused(url: str) -> None:
    assert refusal(url) == "address_refused"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://images.test/x.jpg",
        "file:///etc/passwd",
        "gopher://images.test/",
        "/relative/x.jpg",
        "http:///x.jpg",
        "http://user:pw@images.test/x.jpg",
        "http://user@images.test/x.jpg",
        "http://images.test/x.jpg\r\nX-Injected: 1",
        "http://images.test/a b.jpg",
        "http://images.test/\x00.jpg",
        "http://" + "a" * 64 + ".test/x.jpg",
        "http://" + ".".join(["abcdefgh"] * 30) + "/x.jpg",
        "http://images.test/" + "x" * 2100,
        "http://256.0.0.1/x.jpg",
        "http://[fe80::1%25eth0]/x.jpg",
    ],
)
def test_malformed_urls_are_invalid(url: str) -> None:
    assert refusal(url) == "invalid_url"


def test_a_public_address_must_be_spelled_canonically() -> None:
    assert refusal("http://134744072/x.jpg") == "invalid_url"
    assert refusal("http://8.8.8.8/x.jpg") is None


@pytest.mark.parametrize("url", ["http://images.test:22/x.jpg", "http://images.test:6379/x"])
def test_ports_outside_the_list_are_refused(url: str) -> None:
    assert refusal(url) == "port_refused"


@pytest.mark.parametrize(
    "url",
    [
        "http://images.test/x.jpg",
        "https://images.test/x.jpg",
        "http://images.test:8080/x.jpg",
        "https://IMAGES.test:8443/x.jpg",
        "https://bücher.example/x.jpg",
        "http://[2606:4700::1111]/x.jpg",
    ],
)
def test_ordinary_urls_pass(url: str) -> None:
    assert refusal(url) is None


def test_allow_listed_pairs_are_the_only_exception() -> None:
    allow = parse_allow_list(["127.0.0.1:8081", "dam.internal:9000"])
    assert refusal("http://127.0.0.1:8081/x", allow) is None
    assert refusal("http://127.0.0.1:8082/x", allow) == "address_refused"
    assert refusal("http://2130706433:8081/x", allow) == "address_refused"
    assert refusal("http://dam.internal:9000/x", allow) is None
    assert refusal("http://dam.internal:9001/x", allow) == "port_refused"


class FakeResolver(AbstractResolver):
    def __init__(self, answers: list[str]) -> None:
        self.answers = answers

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.answers
        ]

    async def close(self) -> None:
        pass


async def test_a_name_with_any_private_answer_is_refused() -> None:
    resolver = GuardedResolver(frozenset(), FakeResolver(["93.184.216.34", "10.0.0.7"]))
    with capture_logs() as logs, pytest.raises(RefusedByGuard) as refused:
        await resolver.resolve("images.test", 443)
    # The refusal names no address (a tenant reads it); the operator's log does.
    assert str(refused.value) == "images.test resolves to an address that is not public"
    assert [e["address"] for e in logs if e["event"] == "fetch.address_refused"] == ["10.0.0.7"]


async def test_public_answers_pass_and_allowed_pairs_pass_whatever_they_resolve_to() -> None:
    public = GuardedResolver(frozenset(), FakeResolver(["93.184.216.34"]))
    assert [r["host"] for r in await public.resolve("images.test", 443)] == ["93.184.216.34"]
    allowed = GuardedResolver(parse_allow_list(["dam.internal:8080"]), FakeResolver(["10.1.1.1"]))
    assert [r["host"] for r in await allowed.resolve("dam.internal", 8080)] == ["10.1.1.1"]
    with pytest.raises(RefusedByGuard):
        await allowed.resolve("dam.internal", 8081)  # the pair is exact: another port is not


@pytest.mark.parametrize("bad", ["127.0.0.1", "host:", ":80", "host:http"])
def test_allow_list_entries_must_be_host_port(bad: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        parse_allow_list([bad])


@pytest.mark.parametrize("bad", ["", "http", "0", "65536", "80,,x"])
def test_port_lists_must_be_ports(bad: str) -> None:
    with pytest.raises(ValueError, match="port"):
        parse_ports(bad)


async def test_a_name_without_answers_is_refused() -> None:
    resolver = GuardedResolver(frozenset(), FakeResolver([]))
    with pytest.raises(RefusedByGuard, match="no addresses"):
        await resolver.resolve("images.test", 443)


@pytest.mark.parametrize("answer", ["::ffff:127.0.0.1", "fd00:ec2::254", "64:ff9b::a9fe:a9fe"])
async def test_ipv6_answers_are_checked_like_ipv4_answers(answer: str) -> None:
    resolver = GuardedResolver(frozenset(), FakeResolver(["2606:4700::1111", answer]))
    with pytest.raises(RefusedByGuard):
        await resolver.resolve("images.test", 443, socket.AF_INET6)


_part = st.one_of(
    st.integers(0, 2**32).map(str),
    st.integers(0, 2**32).map(lambda n: f"0x{n:x}"),
    st.integers(0, 2**32).map(lambda n: f"0X{n:X}"),
    st.integers(0, 2**32).map(lambda n: f"0{n:o}"),
)


@given(st.lists(_part, min_size=1, max_size=4))
def test_numeric_hosts_mean_exactly_what_inet_aton_says(parts: list[str]) -> None:
    """Whatever the C library would connect to, the guard judges that same address."""
    host = ".".join(parts)
    try:
        expected = ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        with pytest.raises(ValueError, match="IPv4"):
            parse_ipv4_number(host)
    else:
        assert parse_ipv4_number(host) == expected


@given(
    st.one_of(
        st.text(max_size=300),
        st.builds(
            lambda scheme, host, rest: f"{scheme}://{host}{rest}",
            st.sampled_from(["http", "https", "ftp", "HTTP"]),
            st.text(max_size=80),
            st.text(max_size=80),
        ),
    )
)
def test_any_string_is_a_url_or_a_clear_refusal(raw: str) -> None:
    try:
        url = check_url(raw, allow=frozenset(), ports=DEFAULT_PORTS)
    except FetchError as exc:
        code = exc.code
    else:
        code = "ok"
        assert url.scheme in ("http", "https")
        assert url.raw_host
        assert url.port in DEFAULT_PORTS
    assert code in {"ok", "invalid_url", "address_refused", "port_refused"}
