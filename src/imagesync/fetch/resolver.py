"""The resolver of the downloader's connector: every address a name resolves to is
judged (`guard.is_forbidden`) before any connection."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from imagesync.fetch.guard import IPAddress, is_forbidden

log = structlog.get_logger(__name__)


class RefusedByGuard(OSError):
    pass


class GuardedResolver(AbstractResolver):
    """Resolves names and refuses if any answer is a forbidden address, so the
    connection goes only to addresses checked here (unless the pair is allow-listed).

    aiohttp's connector connects to exactly the addresses returned, and its DNS cache
    only ever holds answers that passed this check."""

    def __init__(
        self,
        allow: frozenset[tuple[str, int]],
        inner: AbstractResolver | None = None,
        *,
        forbidden: Callable[[IPAddress], bool] = is_forbidden,
    ):
        self._allow = allow
        self._inner = inner or DefaultResolver()
        self._forbidden = forbidden

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if (host.lower().rstrip("."), port) in self._allow:
            return results
        if not results:
            raise RefusedByGuard(f"{host} has no addresses")
        for result in results:
            if self._forbidden(ipaddress.ip_address(result["host"].split("%", 1)[0])):
                # The answer goes to the operator's log only: a tenant must not map internal
                # names by reading refusals.
                log.warning("fetch.address_refused", host=host, address=result["host"])
                raise RefusedByGuard(f"{host} resolves to an address that is not public")
        return results

    async def close(self) -> None:
        await self._inner.close()
