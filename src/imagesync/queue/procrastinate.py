"""The queue on PostgreSQL: procrastinate. Jobs are rows in the service's own database,
taken by procrastinate workers inside `imagesync serve` (the embedded default) or in
`imagesync worker` processes on any number of machines (`IMAGESYNC_QUEUE=procrastinate`).

A job is inserted on the caller's own connection, inside its transaction: the work and
its job commit together or not at all. Every task of `queue.Tasks` is registered here
with the queue's one retry rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, LiteralString

import procrastinate
import psycopg
import structlog
from procrastinate import JobContext, RetryDecision
from procrastinate import jobs as procrastinate_jobs
from procrastinate.psycopg_connector import PsycopgConnector
from procrastinate.retry import BaseRetryStrategy
from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.queue import (
    MAINTENANCE,
    SOON_SECONDS,
    Attempt,
    Job,
    RetrySoon,
    Task,
    Tasks,
)

log = structlog.get_logger(__name__)


def conninfo(async_database_url: str) -> str:
    """psycopg's form of the service's `postgresql+psycopg://` URL."""
    scheme, _, rest = async_database_url.partition("://")
    if not scheme.startswith("postgresql"):
        raise ValueError("procrastinate needs PostgreSQL")
    return f"postgresql://{rest}"


# Waits before a job's outcome is sent again on a fresh connection: about 15 s in all,
# the time a failover takes.
OUTCOME_RETRIES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


class ResilientConnector(PsycopgConnector):
    """procrastinate's connector (whose pool already replaces connections cut while
    idle), for a database whose connections get cut under a statement (a failover, a
    restart, `pg_terminate_backend`): a statement without a result (a job's outcome:
    finished, failed, to retry) that lost its connection is sent again on a fresh one.
    Lost, that outcome left the job `doing` under a worker that lived on, and nothing
    ever took it back."""

    async def execute_query_async(self, query: LiteralString, **arguments: Any) -> None:
        for wait in (*OUTCOME_RETRIES, None):
            try:
                await super().execute_query_async(query, **arguments)
                return
            except procrastinate.exceptions.ConnectorException as exc:
                if wait is None or not isinstance(exc.__cause__, psycopg.OperationalError):
                    raise
                log.warning("queue.statement_retried", error=str(exc.__cause__), retry_in=wait)
                await asyncio.sleep(wait)


class ProcrastinateQueue:
    def __init__(self, app: procrastinate.App) -> None:
        self.app = app

    async def defer(self, session: AsyncSession, task: str, jobs: Sequence[Job]) -> None:
        if not jobs:
            return
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        made = [
            self.app.configure_task(
                task, lock=job.lock, schedule_in={"seconds": job.delay} if job.delay else None
            ).make_new_job(**job.args)
            for job in jobs
        ]
        await self.app.job_manager.batch_defer_jobs_async(made, connection=raw.driver_connection)


class Retry(BaseRetryStrategy):
    """The queue's one rule (`queue.backoff`), until `max_attempts` runs have failed."""

    def __init__(self, max_attempts: int) -> None:
        self.max_attempts = max_attempts

    def get_retry_decision(
        self,
        *,
        exception: BaseException,  # noqa: ARG002 - every failure counts alike
        job: procrastinate_jobs.Job,
    ) -> RetryDecision | None:
        attempt = Attempt(job.attempts + 1, self.max_attempts, {})  # the run that failed
        if attempt.final:
            return None
        return RetryDecision(retry_in={"seconds": attempt.next_in})


def _adapt(task: Task, max_attempts: int) -> Callable[..., Awaitable[None]]:
    """`task`'s function as a procrastinate task: given its `Attempt`, and on
    `RetrySoon` deferred anew a second later (a new job: the wait is not a failure)."""

    async def run(context: JobContext, **args: Any) -> None:
        job = context.job
        attempt = Attempt(job.attempts + 1, max_attempts, context.additional_context)
        if task.cron is not None:
            args = {}  # procrastinate's tick timestamp
        try:
            await task.function(attempt, **args)
        except RetrySoon:
            deferrer = context.app.configure_task(
                task.name, lock=job.lock, schedule_in={"seconds": SOON_SECONDS}
            )
            await deferrer.defer_async(**args)

    run.__name__ = run.__qualname__ = task.function.__name__
    return run


async def retry_stalled(context: JobContext, timestamp: int) -> None:  # noqa: ARG001
    """Run again the jobs of workers that stopped sending heartbeats (killed, frozen, cut
    off): every 10 s, for workers silent for 3 heartbeats."""
    manager = context.app.job_manager
    silent = context.additional_context["settings"].stalled_worker_seconds
    for job in await manager.get_stalled_jobs(seconds_since_heartbeat=silent):
        log.warning("queue.job.stalled", job=job.id, task=job.task_name, worker=job.worker_id)
        await manager.retry_job(job)


def register(app: procrastinate.App, tasks: Tasks, *, max_attempts: int) -> None:
    """Every declared task, and procrastinate's own upkeep (taking back stalled jobs).
    procrastinate defers each periodic tick once for the whole cluster, so exactly one
    worker runs it; a queueing lock keeps ticks from piling up behind a slow run."""
    for task in tasks:
        registered = app.task(
            name=task.name,
            queue=task.queue,
            priority=task.priority,
            pass_context=True,
            retry=Retry(max_attempts),
            queueing_lock=task.name if task.cron else None,
        )(_adapt(task, max_attempts))
        if task.cron is not None:
            app.periodic(cron=task.cron, periodic_id=task.name)(registered)
    name = "maintenance.retry_stalled"
    stalled = app.task(name=name, queue=MAINTENANCE, pass_context=True, queueing_lock=name)
    app.periodic(cron="* * * * * */10", periodic_id=name)(stalled(retry_stalled))
