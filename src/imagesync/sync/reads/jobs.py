"""Reading jobs: a job's status is derived from its products, never stored."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.catalog.models import Account
from imagesync.kit.errors import NotFound
from imagesync.sync import repository
from imagesync.sync.models import SyncJob, SyncJobProduct
from imagesync.sync.schemas import JobStatus, ProductResult, SyncJobRead


def job_status(statuses: Sequence[str]) -> JobStatus:
    if any(s in ("queued", "running") for s in statuses):
        return "queued" if all(s == "queued" for s in statuses) else "running"
    failed = sum(s == "failed" for s in statuses)
    if failed == 0:
        return "succeeded"
    return "failed" if failed == len(statuses) else "partially_failed"


def product_result(entry: SyncJobProduct) -> ProductResult:
    """The entry's result; while it is still to run, its status with the error of the
    attempt that is to be tried again, if any."""
    if entry.result is None:
        return ProductResult.model_validate(
            {"item_number": entry.item_number, "status": entry.status}
        )
    result = ProductResult.model_validate(entry.result)
    if result.status != entry.status:  # a noted error: the entry runs again
        result = result.model_copy(update={"status": entry.status})
    return result


def job_read(job: SyncJob) -> SyncJobRead:
    status = job_status([entry.status for entry in job.products])
    finished = [e.finished_at for e in job.products if e.finished_at is not None]
    return SyncJobRead(
        id=job.id,
        status=status,
        created_at=job.created_at,
        finished_at=max(finished) if status not in ("queued", "running") and finished else None,
        products=[product_result(entry) for entry in job.products],
    )


async def get_job(session: AsyncSession, account: Account, job_id: str) -> SyncJob:
    job = await repository.get_job(session, account.id, job_id)
    if job is None:
        raise NotFound(f"No image sync job {job_id!r}")
    return job
