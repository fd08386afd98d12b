"""The one way tests wait for something to become true: `wait_for`, polling a check
until it holds or time runs out (a failure that names what was awaited)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest


async def wait_for(
    check: Callable[[], Awaitable[bool]],
    seconds: float = 30,
    *,
    what: str = "",
    every: float = 0.1,
) -> None:
    """Poll `check` every `every` seconds until it is true; fail after `seconds`. A
    server still starting (a connection refused) counts as not yet."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        try:
            if await check():
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(every)
    pytest.fail(f"timed out after {seconds:g} s waiting for {what or check.__name__}")
