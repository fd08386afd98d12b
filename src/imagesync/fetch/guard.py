"""Which addresses the downloader may connect to."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def is_forbidden(address: IPAddress) -> bool:
    """True for anything but a plain public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv4Address) and address in _CGNAT)
    )


def parse_allow_list(entries: Iterable[str]) -> frozenset[tuple[str, int]]:
    """`host:port` pairs an operator allows even when they are private or loopback."""
    allowed = set()
    for entry in entries:
        host, sep, port = entry.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{entry!r} is not host:port")
        allowed.add((host.strip("[]").lower(), int(port)))
    return frozenset(allowed)


class RefusedByGuard(OSError):
    pass


class GuardedResolver(AbstractResolver):
    """Resolves names and refuses if any answer is a forbidden address, so the
    connection goes only to addresses checked here (unless the pair is allow-listed)."""

    def __init__(self, allow: frozenset[tuple[str, int]], inner: AbstractResolver | None = None):
        self._allow = allow
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if (host.lower(), port) in self._allow:
            return results
        for result in results:
            if is_forbidden(ipaddress.ip_address(result["host"])):
                raise RefusedByGuard(f"{host} resolves to {result['host']}, which is not public")
        return results

    async def close(self) -> None:
        await self._inner.close()


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_literal(host: str, port: int, allow: frozenset[tuple[str, int]]) -> str | None:
    """A reason to refuse an IP-literal host (names are checked by the resolver)."""
    address = literal_address(host)
    if address is None or (host.strip("[]").lower(), port) in allow:
        return None
    if is_forbidden(address):
        return f"{address} is not a public address"
    return None
