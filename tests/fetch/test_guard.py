"""Which addresses the downloader may reach. DNS answers are faked; nothing connects."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from imagesync.fetch.guard import (
    GuardedResolver,
    RefusedByGuard,
    check_literal,
    is_forbidden,
    parse_allow_list,
)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "ff02::1",
    ],
)
def test_special_addresses_are_forbidden(address: str) -> None:
    assert is_forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert not is_forbidden(ipaddress.ip_address(address))


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
    with pytest.raises(RefusedByGuard, match=r"10\.0\.0\.7"):
        await resolver.resolve("images.test", 443)


async def test_public_answers_pass_and_allowed_pairs_pass_whatever_they_resolve_to() -> None:
    public = GuardedResolver(frozenset(), FakeResolver(["93.184.216.34"]))
    assert [r["host"] for r in await public.resolve("images.test", 443)] == ["93.184.216.34"]
    allowed = GuardedResolver(parse_allow_list(["dam.internal:8080"]), FakeResolver(["10.1.1.1"]))
    assert [r["host"] for r in await allowed.resolve("dam.internal", 8080)] == ["10.1.1.1"]
    with pytest.raises(RefusedByGuard):
        await allowed.resolve("dam.internal", 8081)  # the pair is exact: another port is not


def test_literal_hosts_are_checked_against_the_allow_list() -> None:
    allow = parse_allow_list(["127.0.0.1:8080"])
    assert check_literal("127.0.0.1", 8080, allow) is None
    assert check_literal("127.0.0.1", 8081, allow) is not None
    assert check_literal("[::1]", 8080, allow) is not None
    assert check_literal("images.test", 80, allow) is None  # names go to the resolver


@pytest.mark.parametrize("bad", ["127.0.0.1", "host:", ":80", "host:http"])
def test_allow_list_entries_must_be_host_port(bad: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        parse_allow_list([bad])
