"""Small asyncio helpers."""

from __future__ import annotations

import asyncio
import contextlib


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set, or `seconds` pass; whether it was set.

    Not `asyncio.wait_for`: on Python 3.11 it swallows a cancellation that arrives just as
    the event is set, so a runner's loop told to stop went on for ever (a stop that hung
    one test run in six). `asyncio.timeout` lets the cancellation through."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
