"""The procrastinate queue: jobs are rows in the service's PostgreSQL database, taken
by `imagesync worker` processes on any number of machines.

A job is inserted on the caller's own connection, inside its transaction: the work and
its job commit together or not at all.
"""

from __future__ import annotations

from typing import Any

import procrastinate
from sqlalchemy.ext.asyncio import AsyncSession


def conninfo(async_database_url: str) -> str:
    """psycopg's form of the service's `postgresql+psycopg://` URL."""
    scheme, _, rest = async_database_url.partition("://")
    if not scheme.startswith("postgresql"):
        raise ValueError("procrastinate needs PostgreSQL")
    return f"postgresql://{rest}"


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
