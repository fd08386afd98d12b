"""The decode budget: decodes wait for their share, in order, and nothing leaks."""

from __future__ import annotations

import asyncio

import pytest

from imagesync.media.budget import DecodeBudget


async def test_a_decode_waits_until_the_budget_has_room() -> None:
    budget = DecodeBudget(100)
    order: list[str] = []
    first_in = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> None:
        async with budget.reserve(70):
            order.append("first in")
            first_in.set()
            await release_first.wait()
        order.append("first out")

    async def second() -> None:
        await first_in.wait()
        async with budget.reserve(70):
            order.append("second in")
            assert budget.held == 70

    tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
    await asyncio.sleep(0.05)
    assert order == ["first in"]  # 70 + 70 is over 100: the second waits
    release_first.set()
    await asyncio.gather(*tasks)
    assert order == ["first in", "first out", "second in"]
    assert budget.held == 0


async def test_small_decodes_share_the_budget_at_once() -> None:
    budget = DecodeBudget(100)
    async with budget.reserve(40), budget.reserve(40):
        assert budget.held == 80
    assert budget.held == 0


async def test_a_big_decode_is_not_starved_by_small_ones() -> None:
    budget = DecodeBudget(100)
    order: list[str] = []
    small_in = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with budget.reserve(30):
            small_in.set()
            await release.wait()

    async def take(name: str, nbytes: int) -> None:
        async with budget.reserve(nbytes):
            order.append(name)

    held = asyncio.create_task(holder())
    await small_in.wait()
    big = asyncio.create_task(take("big", 90))
    await asyncio.sleep(0.01)
    small = asyncio.create_task(take("small", 10))  # would fit now, but the big one came first
    await asyncio.sleep(0.01)
    assert order == []
    release.set()
    await asyncio.gather(held, big, small)
    assert order == ["big", "small"]


async def test_a_cancelled_wait_leaves_the_budget_whole() -> None:
    budget = DecodeBudget(100)
    async with budget.reserve(100):
        waiter = asyncio.create_task(_hold(budget, 50))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert budget.held == 0
    async with budget.reserve(100):
        assert budget.held == 100


async def test_more_than_the_whole_budget_is_a_programming_error() -> None:
    budget = DecodeBudget(100)
    with pytest.raises(ValueError, match="over the whole budget"):
        async with budget.reserve(101):
            pass
    assert budget.held == 0


async def _hold(budget: DecodeBudget, nbytes: int) -> None:
    async with budget.reserve(nbytes):
        pass
