"""`wait_event` lets a cancellation through even when the event is set at the same
moment (Python 3.11's `asyncio.wait_for` swallowed it, and a runner told to stop ran on)."""

from __future__ import annotations

import asyncio

import pytest

from imagesync.kit.aio import wait_event


async def test_a_cancellation_as_the_event_is_set_is_not_lost() -> None:
    for _ in range(50):
        event = asyncio.Event()
        waiter = asyncio.create_task(wait_event(event, 5))
        await asyncio.sleep(0)  # waiting now
        event.set()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter


async def test_it_returns_when_set_or_after_the_timeout() -> None:
    event = asyncio.Event()
    event.set()
    await asyncio.wait_for(wait_event(event, 5), 1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await wait_event(asyncio.Event(), 0.05)
    assert loop.time() - start >= 0.04
