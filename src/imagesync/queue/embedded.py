"""The embedded queue: all work runs inside `imagesync serve`.

The domain's own rows are the durable queue (a queued product of a sync job, a pending
rendition); the in-process runners claim them with leases, so a crash loses nothing.
Deferring only wakes the runner that serves the task, once the transaction commits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session


class EmbeddedQueue:
    def __init__(self) -> None:
        self._wakers: dict[str, Callable[[], None]] = {}

    def serve(self, task: str, wake: Callable[[], None]) -> None:
        """`wake` is called after a transaction that deferred `task` commits."""
        self._wakers[task] = wake

    async def defer(
        self,
        session: AsyncSession,
        task: str,
        args: dict[str, Any],  # noqa: ARG002 - the rows themselves say what to do
        *,
        queue: str,  # noqa: ARG002
        lock: str | None = None,  # noqa: ARG002 - the runners keep products in order
        priority: int = 0,  # noqa: ARG002
    ) -> None:
        wake = self._wakers.get(task)
        if wake is None:
            return  # nobody runs it here (IMAGESYNC_EMBEDDED_WORKER=false): it waits

        def on_commit(_session: Session) -> None:
            wake()

        event.listen(session.sync_session, "after_commit", on_commit, once=True)

    def wake(self, task: str) -> None:
        wake = self._wakers.get(task)
        if wake is not None:
            wake()
