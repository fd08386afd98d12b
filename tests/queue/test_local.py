"""The local runner (the queue on SQLite) on a real database: locks keep order, shares
take turns, failures wait the queue's backoff and end `failed` after the last attempt,
a busy task is not a failure, what a stopped process held is taken back at start, and
periodic work runs. The fake queue keeps the transaction's promise too."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.kit.clock import Clock
from imagesync.kit.db import create_engine, create_sessionmaker, session_scope
from imagesync.queue import Attempt, Job, RetrySoon, Tasks, local
from imagesync.queue.local import Lane, LocalQueue, LocalRunner
from imagesync.queue.memory import MemoryQueue
from imagesync.queue.models import QueueJob
from tests.waiting import wait_for


@pytest.fixture
async def sessionmaker(
    tmp_path: Path, sqlite_template: Path
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    path = tmp_path / "queue.db"
    shutil.copy(sqlite_template, path)
    engine = create_engine(f"sqlite+aiosqlite:///{path}", pool_size=1, max_overflow=0)
    yield create_sessionmaker(engine)
    await engine.dispose()


@dataclass
class Work:
    """Tasks that record what ran, and wait while `hold` is clear."""

    tasks: Tasks = field(default_factory=Tasks)
    ran: list[tuple[str, int]] = field(default_factory=list)  # (name, attempt)
    running: set[str] = field(default_factory=set)
    most_at_once: int = 0
    hold: asyncio.Event = field(default_factory=asyncio.Event)
    fail_first: dict[str, int] = field(default_factory=dict)  # name -> failures to raise
    busy_first: dict[str, int] = field(default_factory=dict)  # name -> RetrySoon to raise
    finals: list[str] = field(default_factory=list)
    ticks: list[int] = field(default_factory=list)  # the periodic task's attempts

    def __post_init__(self) -> None:
        self.hold.set()
        self.tasks.task("test.step", queue="work")(self.step)
        self.tasks.periodic("test.tick", "0 0 1 1 *", queue="work")(self.tick)

    async def step(self, attempt: Attempt, name: str) -> None:
        if self.busy_first.get(name, 0) > 0:
            self.busy_first[name] -= 1
            raise RetrySoon(name)
        if attempt.final:
            self.finals.append(name)
        if self.fail_first.get(name, 0) >= attempt.number:
            raise RuntimeError(f"{name} failed")
        self.running.add(name)
        self.most_at_once = max(self.most_at_once, len(self.running))
        try:
            await self.hold.wait()
        finally:
            self.running.discard(name)
        self.ran.append((name, attempt.number))

    async def tick(self, attempt: Attempt) -> None:
        self.ticks.append(attempt.number)

    def names(self) -> list[str]:
        return [name for name, _ in self.ran]


def runner(
    work: Work,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    slots: int = 2,
    share_max: int | None = None,
    max_attempts: int = 3,
) -> tuple[LocalQueue, LocalRunner]:
    queue = LocalQueue(work.tasks)
    return queue, LocalRunner(
        queue,
        sessionmaker,
        [Lane("work", slots, share_max=share_max)],
        {},
        max_attempts=max_attempts,
        grace_seconds=1,
    )


async def defer(
    queue: LocalQueue | MemoryQueue,
    sessionmaker: async_sessionmaker[AsyncSession],
    *jobs: Job,
) -> None:
    async with session_scope(sessionmaker) as session:
        await queue.defer(session, "test.step", list(jobs))


async def rows(sessionmaker: async_sessionmaker[AsyncSession]) -> list[QueueJob]:
    async with session_scope(sessionmaker) as session:
        return list((await session.scalars(select(QueueJob).order_by(QueueJob.id))).all())


async def test_jobs_of_one_lock_run_one_at_a_time_in_order(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    work = Work()
    queue, run = runner(work, sessionmaker, slots=4)
    await run.start()
    try:
        await defer(
            queue,
            sessionmaker,
            *(Job({"name": f"p{n}"}, lock="product:1") for n in range(4)),
            Job({"name": "other"}, lock="product:2"),
        )

        async def all_ran() -> bool:
            return len(work.names()) == 5

        await wait_for(all_ran, 10)
    finally:
        await run.stop()
    assert [n for n in work.names() if n != "other"] == ["p0", "p1", "p2", "p3"]
    assert await rows(sessionmaker) == []  # done jobs are deleted


async def test_shares_take_turns_and_none_runs_more_than_its_share(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Account A queued six first; account B's one starts with A's first, not after all
    of A's: with two slots and at most one of a share at once, they alternate."""
    work = Work()
    work.hold.clear()
    queue, run = runner(work, sessionmaker, slots=2, share_max=1)
    await defer(queue, sessionmaker, *(Job({"name": f"a{n}"}, share="account:A") for n in range(6)))
    await defer(queue, sessionmaker, Job({"name": "b0"}, share="account:B"))
    await run.start()
    try:

        async def two_running() -> bool:
            return len(work.running) == 2

        await wait_for(two_running, 10)
        assert work.running == {"a0", "b0"}
        work.hold.set()

        async def all_ran() -> bool:
            return len(work.names()) == 7

        await wait_for(all_ran, 10)
    finally:
        await run.stop()
    assert work.most_at_once == 2
    assert [n for n in work.names() if n.startswith("a")] == [f"a{n}" for n in range(6)]


def three_lanes(work: Work, sessionmaker: async_sessionmaker[AsyncSession]) -> LocalRunner:
    """`work` (one slot) beside two lanes of their own, `other` and `spare`."""
    return LocalRunner(
        LocalQueue(work.tasks),
        sessionmaker,
        [Lane("work", 1), Lane("other", 1), Lane("spare", 1)],
        {},
        max_attempts=3,
        grace_seconds=1,
    )


async def test_the_end_of_a_job_costs_one_look_not_one_per_lane(
    sessionmaker: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """During an import every job's end woke the runner, and it asked every lane with
    room for work: three looks (each the lane's fair-turn query) for one job, two of them
    at lanes that had none. A lane that found nothing is asked again only when something
    of its own changes."""
    monkeypatch.setattr(local, "QUIET_SECONDS", 60.0)  # no look comes of time passing
    work = Work()
    run = three_lanes(work, sessionmaker)
    await defer(run.queue, sessionmaker, *(Job({"name": f"p{n}"}) for n in range(6)))
    await run.start()
    try:

        async def all_ran() -> bool:
            return len(work.names()) == 6

        await wait_for(all_ran, 10)
    finally:
        await run.stop()
    # One look at `work` per job (the six and the periodic tick) and one after the
    # last; `other` and `spare` once each. Asking every lane at each take was three
    # looks per job.
    assert run.looks <= 7 + 1 + 2


async def test_a_lane_that_found_nothing_is_asked_again_for_a_job_of_its_own(
    sessionmaker: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    """A lane left alone after an empty look still runs what is deferred to it at once,
    and what comes due in it while another lane's job runs, within its quiet time."""
    monkeypatch.setattr(local, "QUIET_SECONDS", 0.2)
    work = Work()
    others: list[str] = []

    async def other(attempt: Attempt, name: str) -> None:  # noqa: ARG001
        others.append(name)

    work.tasks.task("test.other", queue="other")(other)
    run = three_lanes(work, sessionmaker)

    async def every_lane_looked_at() -> bool:
        return run.looks >= 3

    async def now_ran() -> bool:
        return others == ["now"]

    async def long_running() -> bool:
        return work.running == {"long"}

    async def later_ran() -> bool:
        return others == ["now", "later"]

    await run.start()
    try:
        # The runner has looked at every lane and found nothing: all three are quiet.
        await wait_for(every_lane_looked_at, 10)
        async with session_scope(sessionmaker) as session:
            await run.queue.defer(session, "test.other", [Job({"name": "now"})])
        await wait_for(now_ran, 10)

        # Due in a minute; the clock passes that while one long job of `work` runs and
        # nothing wakes the runner: the quiet lane is asked again within its quiet time,
        # not at the idle poll's two seconds.
        work.hold.clear()
        await defer(run.queue, sessionmaker, Job({"name": "long"}))
        await wait_for(long_running, 10)
        async with session_scope(sessionmaker) as session:
            await run.queue.defer(session, "test.other", [Job({"name": "later"}, delay=60)])
        await asyncio.sleep(0.3)
        assert others == ["now"]
        clock.advance(seconds=120)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await wait_for(later_ran, 10, every=0.02)
        assert loop.time() - started < 1.0
        assert work.running == {"long"}
        work.hold.set()
    finally:
        await run.stop()


async def test_a_failure_waits_the_backoff_then_runs_again(
    sessionmaker: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    work = Work(fail_first={"flaky": 1})
    queue, run = runner(work, sessionmaker)
    await run.start()
    try:
        await defer(queue, sessionmaker, Job({"name": "flaky"}))

        async def waiting_its_turn() -> bool:
            found = await rows(sessionmaker)
            return bool(found) and found[0].failures == 1 and found[0].status == "todo"

        await wait_for(waiting_its_turn, 10)
        (job,) = await rows(sessionmaker)
        assert "flaky failed" in (job.error or "")
        await asyncio.sleep(0.3)
        assert work.ran == []  # 2 s of backoff, not over yet
        clock.advance(seconds=2)
        run.wake()

        async def ran() -> bool:
            return work.ran == [("flaky", 2)]

        await wait_for(ran, 10)
    finally:
        await run.stop()


async def test_the_final_attempt_is_said_and_its_failure_kept(
    sessionmaker: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    work = Work(fail_first={"poison": 99})
    queue, run = runner(work, sessionmaker, max_attempts=2)
    await run.start()
    try:
        await defer(queue, sessionmaker, Job({"name": "poison"}))

        async def failed() -> bool:
            clock.advance(seconds=5)  # past any backoff
            run.wake()
            found = await rows(sessionmaker)
            return bool(found) and found[0].status == "failed"

        await wait_for(failed, 10)
    finally:
        await run.stop()
    (job,) = await rows(sessionmaker)
    assert job.failures == 2
    assert work.finals == ["poison"]  # told it was the last, once


async def test_a_busy_task_runs_again_soon_without_counting_a_failure(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    work = Work(busy_first={"held": 2})
    queue, run = runner(work, sessionmaker)
    await run.start()
    try:
        await defer(queue, sessionmaker, Job({"name": "held"}))

        async def ran() -> bool:
            return bool(work.ran)

        await wait_for(ran, 10)
    finally:
        await run.stop()
    assert work.ran == [("held", 1)]  # still its first attempt


async def test_what_a_stopped_process_held_is_taken_back_at_start(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    work = Work()
    queue, run = runner(work, sessionmaker)
    await defer(queue, sessionmaker, Job({"name": "cut-off"}))
    async with session_scope(sessionmaker) as session:
        await session.execute(text("UPDATE queue_job SET status = 'doing'"))  # then killed
    await run.start()
    try:

        async def ran() -> bool:
            return work.names() == ["cut-off"]

        await wait_for(ran, 10)
    finally:
        await run.stop()


async def test_a_stop_hands_back_what_outlives_the_grace(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    work = Work()
    work.hold.clear()
    queue, run = runner(work, sessionmaker)
    await run.start()
    await defer(queue, sessionmaker, Job({"name": "long"}))

    async def running() -> bool:
        return work.running == {"long"}

    await wait_for(running, 10)
    await run.stop()  # a second of grace, then cut off
    (job,) = await rows(sessionmaker)
    assert job.status == "doing"  # the next start takes it back
    assert work.ran == []


async def test_periodic_work_runs_at_start_once_and_on_its_schedule(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    work = Work()
    _, run = runner(work, sessionmaker)
    await run.start()
    try:

        async def ticked() -> bool:
            return work.ticks == [1]

        await wait_for(ticked, 10)
        await asyncio.sleep(0.3)
    finally:
        await run.stop()
    assert work.ticks == [1]  # the next tick is on New Year's Day


async def test_the_fake_queue_runs_only_what_was_committed(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    work = Work(fail_first={"flaky": 1})
    queue = MemoryQueue(work.tasks)
    async with sessionmaker() as session:
        await queue.defer(session, "test.step", [Job({"name": "rolled-back"})])
        await session.rollback()
    await defer(queue, sessionmaker, Job({"name": "flaky"}), Job({"name": "kept"}))
    await queue.run_all({})
    assert work.ran == [("kept", 1), ("flaky", 2)]
    assert queue.jobs == []
