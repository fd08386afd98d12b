"""The service's clock. Every part asks `utcnow()`, so there is one seam: a test moves
time forward (`clock.advance(days=8)`) instead of ageing rows by hand or sleeping.

The database's own clock (`now()` in SQL) and the store's file times are not moved."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        """Move time forward (`days=`, `hours=`, `seconds=` ...), for everything in this
        process that asks `utcnow()`."""
        self.offset += timedelta(**delta)

    def reset(self) -> None:
        self.offset = timedelta(0)


clock = Clock()


def utcnow() -> datetime:
    """Now, timezone-aware UTC, from the one clock."""
    return clock.now()
