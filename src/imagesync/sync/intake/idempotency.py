"""`Idempotency-Key` on a sync (the IETF httpapi draft "The Idempotency-Key HTTP Header
Field"): a request sent again with the same key, after a timeout or a lost answer,
answers with the job the first one recorded and records nothing new.

The key is claimed in the submission's own transaction, before anything is written, so
the job and its key commit together or not at all. Of two requests with one key at once,
the second waits for the first's transaction (PostgreSQL: the key's unique index;
SQLite: its one writer) and then answers with the first's job."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.kit.db import utcnow
from imagesync.kit.errors import Problem, ValidationFailed
from imagesync.sync import repository
from imagesync.sync.schemas import ImageSyncRequest

HEADER = "Idempotency-Key"


def request_digest(request: ImageSyncRequest) -> str:
    """What makes two requests the same: their validated content, whatever the JSON's
    spacing, key order or field names (`existence_key` is `existance_key`)."""
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def claim(
    session: AsyncSession,
    account_id: int,
    key: str,
    request: ImageSyncRequest,
    job_id: str,
    *,
    lifetime: timedelta,
) -> str | None:
    """Claim `key` for the job `job_id` about to be recorded; None when claimed (a new key,
    or one older than `lifetime`), else the job the key recorded before. A key sent with
    another request is refused (422 `idempotency_key_reused`)."""
    digest = request_digest(request)
    now = utcnow()
    if await repository.add_idempotency_key(session, account_id, key, digest, job_id, now):
        return None
    earlier = await repository.get_idempotency_key(session, account_id, key)
    if earlier is None or earlier.created_at < now - lifetime:
        await repository.renew_idempotency_key(session, account_id, key, digest, job_id, now)
        return None
    if earlier.request_digest != digest:
        raise ValidationFailed(
            problems=[
                Problem(
                    detail=f"this {HEADER} was sent with another request (at "
                    f"{_when(earlier.created_at)}); send a new key with a new request",
                    header=HEADER,
                    code="idempotency_key_reused",
                    title="Idempotency key reused",
                )
            ]
        )
    return earlier.job_id


async def forget_expired(session: AsyncSession, *, lifetime: timedelta) -> int:
    """Delete keys older than `lifetime`; how many."""
    return await repository.delete_idempotency_keys(session, before=utcnow() - lifetime)


def _when(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
