"""The local runner: the queue on SQLite, inside `imagesync serve`.

Jobs are rows of `queue_job`, inserted in the transaction that records their work, so a
crash loses nothing. One runner, in one process: no leases and no heartbeats; what was
running when the process stopped is taken back when it starts again. It runs in `serve`,
or, when `serve` runs several API processes, in a process of its own beside them: they
wake it with a datagram on a socket of its own (`Waker`) once a job is committed.

Jobs are taken per lane (a queue with its slots). Within a lane, jobs of one `share`
(an account) take turns with other shares': the shares with fewer jobs running go
first, and none runs more than the lane's `share_max` at once. Jobs sharing a `lock`
run one at a time, in the order they were deferred. A lane may run `behind` another:
it waits while that one has work running, so that downloads keep the CPU.

A lane whose last look found less than it had room for is not looked at again until
something could have changed its answer: a job of its own committed in this process or
ended, a wake from another process, or `QUIET_SECONDS` passed (a job due later). So the
end of one job costs one look, not one per lane, and a lane held at its share's maximum
is not asked again for every job another lane defers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from croniter import croniter
from sqlalchemy import (
    Integer,
    Select,
    Table,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from imagesync.kit.aio import wait_event
from imagesync.kit.clock import utcnow
from imagesync.kit.db import on_commit, session_scope
from imagesync.queue import SOON_SECONDS, Attempt, Job, RetrySoon, Task, Tasks
from imagesync.queue.models import QueueJob

log = structlog.get_logger(__name__)

IDLE_POLL_SECONDS = 2.0
QUIET_SECONDS = 1.0  # the longest a lane that found nothing goes without a look


@dataclass(frozen=True)
class Lane:
    queue: str
    slots: int
    share_max: int | None = None  # jobs of one share running at once
    behind: str | None = None  # waits while this lane has jobs running


class Waker:
    """A runner in another process, woken by a datagram on a Unix socket at `path`: the
    runner's process binds it (`listen`), the API's processes send to it (`wake`). A lost
    datagram costs only a wait: the runner looks every `IDLE_POLL_SECONDS` anyway."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._out.setblocking(False)

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # no runner yet, or its queue full: it polls
            self._out.sendto(b"!", self.path)

    def listen(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake` on each datagram, from this event loop; what stops listening."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(self.path)
        loop = asyncio.get_running_loop()

        def readable() -> None:
            with contextlib.suppress(BlockingIOError):
                while sock.recv(64):
                    pass
            wake()

        loop.add_reader(sock.fileno(), readable)

        def close() -> None:
            loop.remove_reader(sock.fileno())
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

        return close


JOBS = cast(Table, QueueJob.__table__)
ADD_JOBS = insert(JOBS)


class LocalQueue:
    """Defers into `queue_job`; the runner, if this process has one (else the `waker` of
    the process that has), looks once the transaction commits."""

    def __init__(self, tasks: Tasks, *, waker: Waker | None = None) -> None:
        self.tasks = tasks
        self.waker = waker
        self.runner: LocalRunner | None = None

    async def defer(self, session: AsyncSession, task: str, jobs: Sequence[Job]) -> None:
        if not jobs:
            return
        declared = self.tasks[task]
        now = utcnow()
        rows = [
            {
                "task": task,
                "queue": declared.queue,
                "args": job.args,
                "lock": job.lock,
                "share": job.share,
                "priority": declared.priority,
                "status": "todo",
                "failures": 0,
                "run_after": now + timedelta(seconds=job.delay),
            }
            for job in jobs
        ]
        await session.execute(ADD_JOBS, rows)
        wake = self._wake(declared.queue)
        if wake is not None:
            on_commit(session, wake)

    def _wake(self, queue: str) -> Callable[[], None] | None:
        """What tells the runner that jobs of `queue` were committed: this process's own,
        else the socket of the process that has it; None when no runner is there to tell."""
        if self.runner is not None:
            return functools.partial(self.runner.wake, queue)
        return self.waker.wake if self.waker is not None else None


class LocalRunner:
    def __init__(
        self,
        queue: LocalQueue,
        sessionmaker: async_sessionmaker[AsyncSession],
        lanes: Sequence[Lane],
        resources: Mapping[str, Any],
        *,
        max_attempts: int,
        grace_seconds: float = 10.0,
    ) -> None:
        self.queue = queue
        self.sessionmaker = sessionmaker
        self.lanes = {lane.queue: lane for lane in lanes}
        self.resources = resources
        self.max_attempts = max_attempts
        self.grace_seconds = grace_seconds
        self._wake = asyncio.Event()
        self._running: dict[asyncio.Task[None], tuple[int, str]] = {}  # job id, queue
        self._loop_task: asyncio.Task[None] | None = None
        self._next_tick: dict[str, datetime] = {}
        self._unlisten: Callable[[], None] | None = None
        # Lanes whose last look found less than their room, until when (monotonic) they
        # go without another unless something of theirs changes.
        self._quiet: dict[str, float] = {}
        self.looks = 0  # of lanes, since the start

    def wake(self, queue: str | None = None) -> None:
        """Look for work now: `queue`'s jobs changed, or (None) any lane's may have."""
        if queue is None:
            self._quiet.clear()
        else:
            self._quiet.pop(queue, None)
        self._wake.set()

    def running(self, queue: str) -> int:
        return sum(1 for _, q in self._running.values() if q == queue)

    async def start(self) -> None:
        """Take back what was running when the process stopped, defer each periodic
        task once (as a start after a long stop should), then run."""
        async with session_scope(self.sessionmaker) as session:
            taken = await session.execute(
                update(QueueJob).where(QueueJob.status == "doing").values(status="todo")
            )
        if taken.rowcount:  # type: ignore[attr-defined]
            log.info("queue.resumed", jobs=taken.rowcount)  # type: ignore[attr-defined]
        now = utcnow()
        for task in self._periodic():
            self._next_tick[task.name] = now
        self.queue.runner = self
        if self.queue.waker is not None:  # the API runs in other processes
            self._unlisten = self.queue.waker.listen(self.wake)
        self._loop_task = asyncio.create_task(self._loop(), name="queue-runner")

    async def stop(self) -> None:
        """Stop taking work; give what runs `grace_seconds` to finish, then cut it off
        (it runs again at the next start)."""
        self.queue.runner = None
        if self._unlisten is not None:
            self._unlisten()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._running:
            await asyncio.wait(list(self._running), timeout=self.grace_seconds)
        cut_off = sorted(job_id for job_id, _ in self._running.values())
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        log.info("queue.stopped", handed_back=cut_off)

    def _periodic(self) -> list[Task]:
        return [t for t in self.queue.tasks if t.cron is not None and t.queue in self.lanes]

    async def _loop(self) -> None:
        while True:
            try:
                await self._defer_due()
                started = await self._take()
            except Exception:
                log.exception("queue.take_failed")
                started = 0
            if not started:
                self._wake.clear()
                if not await wait_event(self._wake, await self._idle_seconds()):
                    self._quiet.clear()  # time passed: jobs may be due

    async def _defer_due(self) -> None:
        now = utcnow()
        for task in self._periodic():
            if self._next_tick[task.name] > now:
                continue
            assert task.cron is not None
            self._next_tick[task.name] = croniter(task.cron, now).get_next(datetime)
            async with session_scope(self.sessionmaker) as session:
                waiting = await session.scalar(
                    select(func.count()).where(
                        QueueJob.task == task.name, QueueJob.status.in_(("todo", "doing"))
                    )
                )
                if not waiting:  # a slow run does not pile ticks up behind it
                    await self.queue.defer(session, task.name, [Job({})])

    async def _idle_seconds(self) -> float:
        """Until the next periodic tick or job due later, at most `IDLE_POLL_SECONDS`. A
        job due already that no lane took waits for a slot, its share's turn or its lock:
        the end of a job wakes the runner for it (waiting 10 ms instead had the runner
        look at every lane a hundred times a second through an import)."""
        now = utcnow()
        wait = IDLE_POLL_SECONDS
        for tick in self._next_tick.values():
            wait = min(wait, (tick - now).total_seconds())
        async with self.sessionmaker() as session:
            due = (await session.execute(NEXT_DUE, {"now": now})).scalar()
        if due is not None:
            wait = min(wait, (due - now).total_seconds())
        if self._running:
            # A lane left alone after an empty look is asked again when its second is
            # up: a job of its own may have come due since.
            clock = asyncio.get_running_loop().time()
            for until in self._quiet.values():
                if until > clock:
                    wait = min(wait, until - clock)
        return max(wait, 0.01)

    async def _take(self) -> int:
        """Start the jobs each lane has room for, taken in one transaction; how many."""
        room = {
            lane: lane.slots - self.running(lane.queue)
            for lane in self.lanes.values()
            if lane.behind is None or not self.running(lane.behind)
        }
        clock = asyncio.get_running_loop().time()
        room = {
            lane: free
            for lane, free in room.items()
            if free > 0 and self._quiet.get(lane.queue, 0.0) <= clock
        }
        if not room:
            return 0
        taken: list[tuple[Any, str]] = []
        async with session_scope(self.sessionmaker) as session:
            now = utcnow()
            for lane, free in room.items():
                found = await _next_jobs(session, lane, free, now)
                self.looks += 1
                if len(found) < free:
                    self._quiet[lane.queue] = clock + QUIET_SECONDS
                else:
                    self._quiet.pop(lane.queue, None)
                taken += [(job, lane.queue) for job in found]
            if taken:
                await session.execute(START_JOBS, {"ids": [job.id for job, _ in taken]})
        for job, queue in taken:
            task = asyncio.create_task(
                self._run(job.id, job.task, job.args, job.failures), name=f"job-{job.id}"
            )
            self._running[task] = (job.id, queue)
            task.add_done_callback(self._done)
        return len(taken)

    def _done(self, task: asyncio.Task[None]) -> None:
        ran = self._running.pop(task, None)
        # Its slot, its share's turn and its lock are free: its lane may find work now.
        self.wake(ran[1] if ran is not None else None)

    async def _run(self, job_id: int, name: str, args: dict[str, Any], failures: int) -> None:
        attempt = Attempt(failures + 1, self.max_attempts, self.resources)
        outcome: dict[str, Any]
        try:
            await self.queue.tasks[name].function(attempt, **args)
        except asyncio.CancelledError:
            raise  # left `doing`: taken back at the next start
        except RetrySoon:
            outcome = {"status": "todo", "run_after": utcnow() + timedelta(seconds=SOON_SECONDS)}
        except Exception as exc:
            log.exception("queue.job.failed", job=job_id, task=name, attempt=attempt.number)
            if attempt.final:
                outcome = {"status": "failed", "failures": attempt.number, "error": repr(exc)}
            else:
                outcome = {
                    "status": "todo",
                    "failures": attempt.number,
                    "run_after": utcnow() + timedelta(seconds=attempt.next_in),
                    "error": repr(exc),
                }
        else:
            outcome = {}
        try:
            async with session_scope(self.sessionmaker) as session:
                if outcome:
                    await session.execute(update(JOBS).where(JOBS.c.id == job_id).values(**outcome))
                else:
                    await session.execute(END_JOB, {"job": job_id})
        except Exception:
            # Left `doing`: taken back at the next start.
            log.exception("queue.outcome_not_recorded", job=job_id, task=name)


# The runner's statements that run around every job, built once (as `_next_jobs`'s).
NEXT_DUE = select(func.min(JOBS.c.run_after)).where(
    JOBS.c.status == "todo", JOBS.c.run_after > bindparam("now", type_=JOBS.c.run_after.type)
)
JOBS_BY_ID = select(JOBS.c.id, JOBS.c.task, JOBS.c.args, JOBS.c.failures).where(
    JOBS.c.id.in_(bindparam("ids", expanding=True))
)
START_JOBS = (
    update(JOBS).where(JOBS.c.id.in_(bindparam("ids", expanding=True))).values(status="doing")
)
END_JOB = delete(JOBS).where(JOBS.c.id == bindparam("job"))


async def _next_jobs(session: AsyncSession, lane: Lane, limit: int, now: datetime) -> list[Any]:
    """The lane's jobs that may start now, in fair turns (see the module's text): rows
    of their `id`, `task`, `args` and `failures`."""
    found = await session.execute(_next_jobs_statement(lane), {"now": now, "limit": limit})
    ids = found.scalars().all()
    if not ids:
        return []
    jobs = (await session.execute(JOBS_BY_ID, {"ids": list(ids)})).all()
    order = {job_id: i for i, job_id in enumerate(ids)}
    return sorted(jobs, key=lambda job: order[job.id])


@functools.cache
def _next_jobs_statement(lane: Lane) -> Select[int]:
    """The ids of the lane's jobs that may start at `:now`, at most `:limit`: built once
    per lane, so that a take (after every job, during an import) does not build and key
    it again on the event loop."""
    earlier = aliased(QueueJob)
    unlocked = or_(
        QueueJob.lock.is_(None),
        ~select(earlier.id)
        .where(
            earlier.lock == QueueJob.lock,
            or_(earlier.status == "doing", (earlier.status == "todo") & (earlier.id < QueueJob.id)),
        )
        .exists(),
    )
    share = func.coalesce(QueueJob.share, "")
    waiting = (
        select(
            QueueJob.id,
            share.label("share"),
            QueueJob.priority,
            func.row_number()
            .over(partition_by=share, order_by=(QueueJob.priority.desc(), QueueJob.id))
            .label("rank"),
        )
        .where(
            QueueJob.queue == lane.queue,
            QueueJob.status == "todo",
            QueueJob.run_after <= bindparam("now", type_=QueueJob.run_after.type),
            unlocked,
        )
        .subquery()
    )
    running = (
        select(func.coalesce(QueueJob.share, "").label("share"), func.count().label("n"))
        .where(QueueJob.queue == lane.queue, QueueJob.status == "doing")
        .group_by(QueueJob.share)
        .subquery()
    )
    # Jobs without a share are each their own: only the order of their ids counts.
    turn = waiting.c.rank + func.coalesce(running.c.n, 0)
    turn = case((waiting.c.share == "", 1), else_=turn)
    stmt = (
        select(waiting.c.id)
        .outerjoin(running, running.c.share == waiting.c.share)
        .order_by(waiting.c.priority.desc(), turn, waiting.c.id)
        .limit(bindparam("limit", type_=Integer))
    )
    if lane.share_max is not None:
        stmt = stmt.where(turn <= lane.share_max)
    return stmt
