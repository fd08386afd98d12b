"""The procrastinate queue: jobs are rows in the service's PostgreSQL database, taken
by `imagesync worker` processes on any number of machines.

A job is inserted on the caller's own connection, inside its transaction: the work and
its job commit together or not at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, LiteralString

import procrastinate
import psycopg
import structlog
from procrastinate import JobContext, RetryDecision
from procrastinate.jobs import Job
from procrastinate.psycopg_connector import PsycopgConnector
from procrastinate.retry import BaseRetryStrategy
from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.queue import MAINTENANCE

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
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        deferrer = self.app.configure_task(
            task, queue=queue, lock=lock, priority=priority, connection=raw.driver_connection
        )
        await deferrer.defer_async(**args)

    def wake(self, task: str) -> None:
        """Nothing to do: a job that found its work held retries by itself."""


class Backoff(BaseRetryStrategy):
    """2, 4, 8 ... seconds, at most 5 minutes. Work that found its subject held by
    another runner (one of `soon`) is looked at again a second later."""

    def __init__(self, *, soon: tuple[type[BaseException], ...] = ()) -> None:
        self.soon = soon

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, self.soon):
            return RetryDecision(retry_in={"seconds": 1})
        return RetryDecision(retry_in={"seconds": min(2 ** (job.attempts + 1), 300)})


def setting(context: JobContext, name: str) -> Any:
    """A setting a task needs, from the worker's `additional_context`."""
    return context.additional_context["settings"][name]


async def retry_stalled(context: JobContext, timestamp: int) -> None:  # noqa: ARG001
    """Run again the jobs of workers that stopped sending heartbeats (killed, frozen, cut
    off): every 10 s, for workers silent for 3 heartbeats."""
    manager = context.app.job_manager
    silent = setting(context, "stalled_worker_seconds")
    for job in await manager.get_stalled_jobs(seconds_since_heartbeat=silent):
        log.warning("queue.job.stalled", job=job.id, task=job.task_name, worker=job.worker_id)
        await manager.retry_job(job)


def periodic(app: procrastinate.App, cron: str, task: Callable[..., Awaitable[None]]) -> None:
    """Run `task(context, timestamp)` on `cron` in the maintenance queue. procrastinate
    defers each tick once for the whole cluster, so exactly one worker runs it; the
    queueing lock keeps ticks from piling up behind a slow run."""
    name = f"maintenance.{task.__name__}"
    registered = app.task(name=name, queue=MAINTENANCE, pass_context=True, queueing_lock=name)
    app.periodic(cron=cron, periodic_id=name)(registered(task))


def register(app: procrastinate.App) -> None:
    """The queue's own periodic work."""
    periodic(app, "* * * * * */10", retry_stalled)
