"""Which URLs and addresses the downloader may reach.

Two checks, both before any connection: `check_url` looks at the URL itself (scheme,
credentials, control characters, lengths, port, and a host written as an IP address
in any spelling), and `resolver.GuardedResolver` looks at every address a name resolves
to, by `is_forbidden`. The connector then connects only to the addresses the resolver
returned, so a name that answers differently a moment later (DNS rebinding) cannot
slip through. Pure: the request schema uses it too, and so does `imagesync.client`.
"""

from __future__ import annotations

import functools
import ipaddress
import re

from yarl import URL

from imagesync.fetch.errors import AddressRefused, InvalidUrl, PortRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = frozenset({80, 443, 8080, 8443})
MAX_URL_LENGTH = 2048
MAX_HOST_LENGTH = 253

# Everything that is not plain public unicast. `ipaddress.is_global` alone is not
# enough: on Python 3.11 it calls 192.0.0.9, 2001:db8::/32 and others global.
_FORBIDDEN_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network", 0.0.0.0 included
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.31.196.0/24",  # AS112
        "192.52.193.0/24",  # AMT
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",  # private
        "192.175.48.0/24",  # AS112
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast (255.255.255.255) included
    )
)
# IPv6: only global unicast (2000::/3) is ever reachable, minus its special blocks.
_GLOBAL_V6 = ipaddress.IPv6Network("2000::/3")
_FORBIDDEN_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "2001::/32",  # Teredo: hides an IPv4 server and client
        "2001:2::/48",  # benchmarking
        "2001:10::/28",  # ORCHID
        "2001:20::/28",  # ORCHIDv2
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
    )
)
# Forms that carry an IPv4 address the packet really goes to: judged by that address.
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a packet to a mapped, NAT64 or 6to4 IPv6 address really goes to."""
    if address in _MAPPED or address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF)
    return None


def is_forbidden(address: IPAddress) -> bool:
    """True for anything but a plain public unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        hidden = embedded_ipv4(address)
        if hidden is not None:
            return is_forbidden(hidden)
        return (
            address in _COMPATIBLE  # deprecated; `::` and `::1` included
            or address not in _GLOBAL_V6
            or any(address in net for net in _FORBIDDEN_V6)
            or not address.is_global
        )
    return any(address in net for net in _FORBIDDEN_V4) or not address.is_global


# -- the URL itself -----------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_NUMERIC_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")


def parse_ipv4_number(host: str) -> ipaddress.IPv4Address | None:
    """The address a numeric host means to browsers and `inet_aton` (WHATWG's IPv4
    parser): `2130706433`, `0x7f000001`, `0177.0.0.1` and `127.1` are all 127.0.0.1.
    None when `host` is not numeric; ValueError when numeric but out of range."""
    parts = host.removesuffix(".").split(".")
    if not _NUMERIC_PART.match(parts[-1]):
        return None
    if len(parts) > 4 or not all(_NUMERIC_PART.match(p) for p in parts):
        raise ValueError(f"{host!r} is not a valid IPv4 address")
    numbers = []
    for part in parts:
        try:
            if part[:2].lower() == "0x":
                numbers.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0"):
                numbers.append(int(part, 8))
            else:
                numbers.append(int(part))
        except ValueError:
            raise ValueError(f"{host!r} is not a valid IPv4 address") from None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise ValueError(f"{host!r} is not a valid IPv4 address")
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


@functools.lru_cache(maxsize=4096)
def parse_url(raw: str) -> URL:
    """Parse `raw`, refusing (`InvalidUrl`) what no setting could make fetchable: a URL
    too long, with spaces or control characters, not absolute http(s), with credentials,
    an IPv6 zone or a host name too long. Needs no network: a request is checked with it.
    Kept per URL (a URL is immutable): the request's schema and its submit both check
    each image's URL, and parsing was most of the schema's validation time."""
    if len(raw) > MAX_URL_LENGTH:
        raise InvalidUrl(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if _CONTROL.search(raw):
        raise InvalidUrl("the URL contains spaces or control characters")
    try:
        url = URL(raw)
        host = url.raw_host
        port = url.port
        authority = url.raw_authority
    except (ValueError, TypeError, UnicodeError) as exc:
        raise InvalidUrl(f"{raw!r} is not a URL") from exc
    if url.scheme not in ("http", "https") or not host or port is None:
        raise InvalidUrl(f"{raw!r} is not an absolute http(s) URL")
    if url.raw_user is not None or url.raw_password is not None or "@" in authority:
        raise InvalidUrl("URLs with credentials are refused")
    if "%" in host:
        raise InvalidUrl("IPv6 zone identifiers are refused")
    if len(host) > MAX_HOST_LENGTH or any(len(label) > 63 for label in host.split(".")):
        raise InvalidUrl("the host name is too long")
    return url


def port_refusal(
    url: URL, *, allow: frozenset[tuple[str, int]], ports: frozenset[int]
) -> PortRefused | None:
    """The refusal of a parsed URL's port, unless the port is fetched from (or the exact
    host and port are allowed)."""
    port = url.port
    if port is None or port in ports or ((url.raw_host or "").lower(), port) in allow:
        return None
    listed = ", ".join(str(p) for p in sorted(ports))
    return PortRefused(f"port {port} is not fetched from (allowed: {listed})")


def check_url(raw: str, *, allow: frozenset[tuple[str, int]], ports: frozenset[int]) -> URL:
    """Parse `raw` and refuse it if it may not be fetched, before anything is resolved:
    `InvalidUrl` for a malformed URL, `AddressRefused` or `PortRefused` otherwise."""
    url = parse_url(raw)
    host = (url.raw_host or "").lower()
    port = url.port
    allowed = (host, port) in allow
    try:
        address = host_address(host)
    except ValueError as exc:
        raise InvalidUrl(str(exc)) from exc
    if address is not None and not allowed:
        if is_forbidden(address):
            raise AddressRefused(
                f"{host} is {address}, which is not a public address (an operator can "
                "allow an exact host:port with IMAGESYNC_FETCH_ALLOW)"
            )
        if isinstance(address, ipaddress.IPv4Address) and host != str(address):
            raise InvalidUrl(f"write the address {host} as {address}")
    refusal = port_refusal(url, allow=allow, ports=ports)
    if refusal is not None:
        raise refusal
    return url


@functools.lru_cache(maxsize=4096)
def host_address(host: str) -> IPAddress | None:
    """The address an IP host means, in any spelling; None for a name. ValueError for
    a number that is no address. Kept per host: a catalog's images come from few hosts,
    and every request names each host again."""
    numeric = parse_ipv4_number(host)
    if numeric is not None:
        return numeric
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
