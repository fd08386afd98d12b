"""A fake queue for unit tests: it keeps what was deferred, in order, and runs it when
asked, with the same retry rule as the real runners."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.kit.db import on_commit
from imagesync.queue import Attempt, Job, RetrySoon, Tasks


@dataclass
class Deferred:
    task: str
    args: dict[str, Any]
    lock: str | None = None
    share: str | None = None
    failures: int = 0


@dataclass
class MemoryQueue:
    tasks: Tasks
    max_attempts: int = 5
    jobs: list[Deferred] = field(default_factory=list)  # committed, not run yet
    failed: list[Deferred] = field(default_factory=list)

    async def defer(self, session: AsyncSession, task: str, jobs: Sequence[Job]) -> None:
        self.tasks[task]
        made = [Deferred(task, job.args, job.lock, job.share) for job in jobs]

        on_commit(session, functools.partial(self.jobs.extend, made))

    async def run_all(self, resources: Mapping[str, Any], *, rounds: int = 20) -> None:
        """Run what is queued, and what that queues, in order, retrying failures at once
        (no backoff here) until nothing is left or `rounds` passes have run."""
        for _ in range(rounds):
            if not self.jobs:
                return
            batch, self.jobs = self.jobs, []
            for job in batch:
                attempt = Attempt(job.failures + 1, self.max_attempts, resources)
                try:
                    await self.tasks[job.task].function(attempt, **job.args)
                except RetrySoon:
                    self.jobs.append(job)
                except Exception:
                    job.failures += 1
                    (self.failed if attempt.final else self.jobs).append(job)
