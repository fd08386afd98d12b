"""Reading a job of an account (what it shows: `results.job_read`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.catalog.models import Account
from imagesync.kit.errors import NotFound
from imagesync.sync import repository
from imagesync.sync.repository import JobRows


async def get_job(session: AsyncSession, account: Account, job_id: str) -> JobRows:
    job = await repository.get_job(session, account.id, job_id)
    if job is None:
        raise NotFound(f"No image sync job {job_id!r}")
    return job
