"""Announcing what a job's account subscribed to, in the transaction that makes it so:
a product that ended `failed`, and the job whose last product ended. Only a job whose
account had an endpoint when it was recorded (`SyncJob.notify`) costs anything here."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.kit.db import utcnow
from imagesync.queue import Job, Queue
from imagesync.sync.models import SyncJobProduct
from imagesync.sync.results import Submitted
from imagesync.sync.webhooks import repository
from imagesync.sync.webhooks.schemas import JOB_FINISHED, PRODUCT_FAILED

DELIVER = "webhooks.deliver"
_UNFINISHED = ("queued", "running")


async def product_ended(
    session: AsyncSession, queue: Queue, entry: SyncJobProduct, *, notifies: bool | None = None
) -> None:
    """`entry` has just ended (a worker's run, in its transaction): announce its failure,
    and the job's end if it was the job's last product. `notifies`: whether the job
    announces its end, where the caller knows it (a run reads it as it takes the entry);
    a job that does not then costs nothing here."""
    if notifies is False or not await repository.job_notifies(session, entry.job_id):
        return
    events: list[tuple[str, int | None]] = []
    if entry.status == "failed":
        events.append((PRODUCT_FAILED, entry.seq))
    await session.flush()
    if not await repository.unfinished_entries(session, entry.job_id):
        events.append((JOB_FINISHED, None))
    await announce(session, queue, entry.account_id, entry.job_id, events)


async def job_recorded(
    session: AsyncSession,
    queue: Queue,
    account_id: int,
    job_id: str,
    entries: Sequence[Submitted],
) -> None:
    """A job of an account with endpoints was recorded with `entries`: announce those that
    ended at once `failed`, and the job's end if none is left to run."""
    events: list[tuple[str, int | None]] = [
        (PRODUCT_FAILED, entry.seq) for entry in entries if entry.status == "failed"
    ]
    if all(entry.status not in _UNFINISHED for entry in entries):
        events.append((JOB_FINISHED, None))
    await announce(session, queue, account_id, job_id, events)


async def announce(
    session: AsyncSession,
    queue: Queue,
    account_id: int,
    job_id: str,
    events: Sequence[tuple[str, int | None]],
) -> None:
    """A delivery of each event to each enabled endpoint that subscribed to it, queued."""
    if not events:
        return
    now = utcnow()
    rows: list[dict[str, Any]] = [
        {
            "id": f"msg_{uuid.uuid4().hex}",
            "webhook_id": webhook.id,
            "event": event,
            "job_id": job_id,
            "seq": seq,
            "status": "pending",
            "reason": None,
            "attempts": [],
            "created_at": now,
            "next_attempt_at": now,
        }
        for webhook in await repository.enabled_webhooks(session, account_id)
        for event, seq in events
        if event in webhook.events
    ]
    await repository.add_deliveries(session, rows)
    await queue.defer(session, DELIVER, [Job({"delivery": row["id"]}) for row in rows])
