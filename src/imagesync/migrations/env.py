"""Alembic environment: runs migrations on the async engine the service uses."""

import asyncio

from alembic import context

import imagesync.models  # noqa: F401  (registers every table on Base.metadata)
from imagesync.kit.db import create_engine, run_migrations_on


async def _run(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations_on)
            await connection.commit()
    finally:
        await engine.dispose()


asyncio.run(_run(context.config.attributes["database_url"]))
