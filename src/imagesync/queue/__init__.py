"""The dispatch seam: domain code defers named tasks through a `Queue`, inside the
transaction that records the work, so work is never recorded without being queued.

Two implementations: `EmbeddedQueue` (the work runs inside `imagesync serve`; the
domain's own rows are the durable queue) and `ProcrastinateQueue` (jobs are rows in
PostgreSQL that `imagesync worker` processes on any machine take).
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

# Queues, so that operators can run workers for some work only (`imagesync worker --queue`).
SYNC = "sync"  # running one product of a sync job: downloads and the apply
RENDITIONS = "renditions"  # CPU-heavy; behind the downloads
MAINTENANCE = "maintenance"  # periodic: collecting unused files, retrying stalled work
QUEUES = (SYNC, RENDITIONS, MAINTENANCE)


class Queue(Protocol):
    async def defer(
        self,
        session: AsyncSession,
        task: str,
        args: dict[str, Any],
        *,
        queue: str,
        lock: str | None = None,
        priority: int = 0,
    ) -> None:
        """Queue `task(**args)` as part of `session`'s transaction: it runs after the
        commit, and never if the transaction rolls back. Jobs sharing a `lock` run one
        at a time, in the order they were deferred."""
        ...

    def wake(self, task: str) -> None:
        """Work of `task` recorded earlier may be ready now (a product the API handed
        back after trying it inline): a runner that waits for it should look."""
        ...
