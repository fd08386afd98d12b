"""How much decoded pixel data this process holds at once.

An image file is small; its pixels are not (a 381 KB PNG can decode to 392 MB). Every
decode, the probe's and the renditions', first reserves the bytes its header says it
will take: it waits while others hold the budget, and one larger than the whole budget
is refused before any pixel is decoded (`probe.TooMuchDecoded`, from the header).
When a large reservation ends, the freed heap is handed back to the system, so that
one big image does not leave the process big for ever.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

# A reservation this large is followed by giving freed memory back to the system.
TRIM_AFTER_BYTES = 32 * 1024 * 1024


class DecodeBudget:
    """At most `total` bytes of decoded pixels at once, in this process; first come,
    first served, so a big image is not starved by a stream of small ones."""

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError("a decode budget needs at least one byte")
        self.total = total
        self.held = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @asynccontextmanager
    async def reserve(self, nbytes: int) -> AsyncIterator[None]:
        """Hold `nbytes` of the budget for the block; `ValueError` past the whole budget
        (the caller refuses such an image from its header first)."""
        if nbytes > self.total:
            raise ValueError(f"{nbytes} bytes is over the whole budget of {self.total}")
        nbytes = max(nbytes, 0)
        await self._acquire(nbytes)
        try:
            yield
        finally:
            self.held -= nbytes
            self._grant()
            if nbytes >= TRIM_AFTER_BYTES:
                give_back_memory()

    async def _acquire(self, nbytes: int) -> None:
        if not self._waiting and self.held + nbytes <= self.total:
            self.held += nbytes
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (nbytes, future)
        self._waiting.append(entry)
        try:
            await future
        except asyncio.CancelledError:
            if entry in self._waiting:
                self._waiting.remove(entry)
            elif future.done() and not future.cancelled():
                self.held -= nbytes  # granted just as it was cancelled: hand it on
                self._grant()
            raise

    def _grant(self) -> None:
        while self._waiting and self.held + self._waiting[0][0] <= self.total:
            nbytes, future = self._waiting.popleft()
            if future.done():
                continue
            self.held += nbytes
            future.set_result(None)


def _load_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc: its allocator returns memory by itself, or cannot
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _load_trim()


def give_back_memory() -> None:
    """Return the heap's free pages to the system (glibc keeps them otherwise: the freed
    pixels of a big image stay in the process's resident size)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
