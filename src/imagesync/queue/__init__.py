"""The queue owns execution: domain code defers named tasks, with their real arguments,
inside the transaction that records the work, so work is never recorded without being
queued, and a task runs only once that transaction commits.

`Tasks` declares every task once: its function, queue, priority, and for periodic work
its schedule. One retry rule holds for all of them (`backoff`, `Attempt.final`). Two
runners execute the same declarations:

- procrastinate, whenever the database is PostgreSQL: inside `imagesync serve` by
  default, in `imagesync worker` processes with `IMAGESYNC_QUEUE=procrastinate`
  (`queue.procrastinate`);
- a durable runner inside `serve` on SQLite, whose jobs are rows of its own table
  (`queue.local`).

`queue.memory` is a fake for unit tests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

# Queues, so that operators can run workers for some work only (`imagesync worker --queue`).
SYNC = "sync"  # running one product of a sync job: downloads and the apply
RENDITIONS = "renditions"  # CPU-heavy; behind the downloads
MAINTENANCE = "maintenance"  # periodic: collecting unused files
WEBHOOKS = "webhooks"  # calling accounts' endpoints when their jobs end
QUEUES = (SYNC, RENDITIONS, MAINTENANCE, WEBHOOKS)

# Seconds before a `RetrySoon` task runs again.
SOON_SECONDS = 1.0


def backoff(failures: int) -> int:
    """Seconds a task waits after its `failures`-th failed run: 2, 4, 8 ... 300."""
    return int(min(2**failures, 300))


class RetrySoon(Exception):
    """Raised by a task whose subject is busy (held by another run, or its account at
    its share): it runs again in `SOON_SECONDS`, and the run is not counted as a
    failure."""


@dataclass(frozen=True)
class Attempt:
    """One run of a task, as its function sees it."""

    number: int  # 1 for the first run; a failed run raises and is counted
    max_attempts: int
    resources: Mapping[str, Any]  # what the process built for tasks (`runtime.open_context`)

    @property
    def final(self) -> bool:
        """No retry follows a failure of this run: the task should record the failure
        itself rather than raise."""
        return self.number >= self.max_attempts

    @property
    def next_in(self) -> int:
        """Seconds before the retry that follows a failure of this run."""
        return backoff(self.number)


TaskFunction = Callable[..., Awaitable[None]]  # (attempt, **args)


@dataclass(frozen=True)
class Task:
    name: str
    function: TaskFunction
    queue: str
    priority: int = 0
    cron: str | None = None  # periodic: deferred on this schedule, without arguments


@dataclass
class Tasks:
    """Every task of the service, declared once for both runners."""

    by_name: dict[str, Task] = field(default_factory=dict)

    def task(
        self, name: str, *, queue: str, priority: int = 0
    ) -> Callable[[TaskFunction], TaskFunction]:
        """Declare `function(attempt, **args)` as the task `name`."""

        def register(function: TaskFunction) -> TaskFunction:
            self.by_name[name] = Task(name, function, queue, priority)
            return function

        return register

    def periodic(
        self, name: str, cron: str, *, queue: str = MAINTENANCE
    ) -> Callable[[TaskFunction], TaskFunction]:
        """Declare `function(attempt)` as work deferred on `cron` (croniter's syntax, a
        sixth field for seconds), once for the whole cluster."""

        def register(function: TaskFunction) -> TaskFunction:
            self.by_name[name] = Task(name, function, queue, cron=cron)
            return function

        return register

    def __getitem__(self, name: str) -> Task:
        return self.by_name[name]

    def __iter__(self) -> Iterator[Task]:
        return iter(self.by_name.values())


@dataclass(frozen=True)
class Job:
    """One job to defer: its task's arguments, and how it queues. Jobs sharing a `lock`
    run one at a time, in the order they were deferred. Jobs of one `share` (an account)
    take turns with other shares' (the local runner; procrastinate's tasks guard their
    share themselves, see `RetrySoon`). A job with a `delay` runs no sooner than that many
    seconds after its transaction commits."""

    args: dict[str, Any]
    lock: str | None = None
    share: str | None = None
    delay: float = 0.0


class Queue(Protocol):
    async def defer(self, session: AsyncSession, task: str, jobs: Sequence[Job]) -> None:
        """Queue a job of `task` for each of `jobs`, in that order, as part of
        `session`'s transaction (one statement for all): they run after the commit, and
        never if the transaction rolls back."""
        ...
