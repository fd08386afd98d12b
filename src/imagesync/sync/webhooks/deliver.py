"""Delivering one event to one endpoint: a queued task per attempt. A call answered 2xx
is delivered; any other answer, or none, is tried again after the next wait of
`IMAGESYNC_WEBHOOK_RETRY_SECONDS`; after the last, the delivery fails and its endpoint
is disabled. Each attempt is kept on the delivery (`GET /webhooks/{id}/deliveries`)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.fetch.downloader import SafeFetcher
from imagesync.fetch.errors import FetchError
from imagesync.kit.db import on_commit, session_scope, utcnow
from imagesync.queue import Job, Queue
from imagesync.sync import metrics
from imagesync.sync import repository as sync_repository
from imagesync.sync.models import Webhook, WebhookDelivery
from imagesync.sync.results import job_read, product_result
from imagesync.sync.webhooks import repository, signing
from imagesync.sync.webhooks.events import DELIVER
from imagesync.sync.webhooks.schemas import (
    JOB_FINISHED,
    JobFinished,
    ProductFailed,
    ProductFailedData,
    attempt_record,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Calls:
    """What deliveries need: the database, the queue their retries go to, the downloader
    (its address checks, and its connections) and the settings of retries."""

    sessionmaker: async_sessionmaker[AsyncSession]
    queue: Queue
    fetcher: SafeFetcher
    waits: tuple[float, ...]  # before each retry; after the last, the delivery fails
    timeout: float


async def deliver(calls: Calls, delivery_id: str) -> None:
    """Make the next attempt of the delivery, if it is still to be made."""
    async with session_scope(calls.sessionmaker) as session:
        found = await repository.get_delivery(session, delivery_id)
        if found is None or found[0].status != "pending":
            return  # its endpoint was deleted, or a retried task finds it done
        delivery, webhook = found
        if webhook.disabled_at is not None:
            _fail(delivery, "its endpoint was disabled before its next attempt")
            return
        if delivery.body is None:  # the job has ended: what it says no longer changes
            delivery.body = await _body(session, delivery)
        url, secret, body = webhook.url, webhook.secret, delivery.body.encode()

    at, started = utcnow(), time.monotonic()
    status: int | None = None
    try:
        answer = await calls.fetcher.post(
            url, body, signing.headers(secret, delivery_id, body), timeout=calls.timeout
        )
        status = answer.status
        error = None if 200 <= status < 300 else _answer_error(status, answer.body)
    except FetchError as exc:
        error = exc.detail
    record = attempt_record(at, status, error, round((time.monotonic() - started) * 1000))

    async with session_scope(calls.sessionmaker) as session:
        found = await repository.get_delivery(session, delivery_id)
        if found is None:
            return
        delivery, webhook = found
        attempts = [*delivery.attempts, record]
        delivery.attempts = attempts
        if delivery.status != "pending":
            # A second run of this task (its worker taken for dead) ended it meanwhile:
            # the call is kept, and no further one is queued.
            outcome = "delivered" if error is None else "failed"
        elif error is None:
            delivery.status, delivery.next_attempt_at = "delivered", None
            outcome = "delivered"
        elif len(attempts) <= len(calls.waits):
            await _again(session, calls.queue, delivery, calls.waits[len(attempts) - 1])
            outcome = "retrying"
        else:
            _fail(delivery, f"no 2xx answer in {len(attempts)} attempts")
            _disable(webhook, delivery, len(attempts), error)
            outcome = "failed"
        on_commit(session, metrics.WEBHOOK_CALLS.labels(outcome).inc)
    log.info(
        "webhook.attempt",
        delivery=delivery_id,
        webhook=webhook.id,
        kind=delivery.event,
        status=status,
        error=error,
        attempt=len(attempts),
    )


async def _again(
    session: AsyncSession, queue: Queue, delivery: WebhookDelivery, wait: float
) -> None:
    delivery.next_attempt_at = utcnow() + timedelta(seconds=wait)
    await queue.defer(session, DELIVER, [Job({"delivery": delivery.id}, delay=wait)])


def _fail(delivery: WebhookDelivery, reason: str) -> None:
    delivery.status, delivery.reason, delivery.next_attempt_at = "failed", reason, None


def _disable(webhook: Webhook, delivery: WebhookDelivery, attempts: int, error: str) -> None:
    if webhook.disabled_at is None:
        webhook.disabled_at = utcnow()
        webhook.disabled_reason = (
            f"delivery {delivery.id} ({delivery.event}) still failed after {attempts} "
            f"attempts: {error}"
        )
        log.warning("webhook.disabled", webhook=webhook.id, delivery=delivery.id)


_TAG = re.compile(r"<[^>]*>")


def _answer_error(status: int, body: str) -> str:
    """What the endpoint said: its status and the start of its body's text (an HTML
    error page without its tags)."""
    excerpt = " ".join(_TAG.sub(" ", body).split())
    if len(excerpt) > 200:
        excerpt = excerpt[:199] + "…"
    return f"answered {status}" + (f": {excerpt}" if excerpt else "")


async def _body(session: AsyncSession, delivery: WebhookDelivery) -> str:
    """The event's body: the job as `GET` on it reads, or the product that failed."""
    if delivery.event == JOB_FINISHED:
        job = await sync_repository.get_job_any(session, delivery.job_id)
        return JobFinished(timestamp=utcnow(), data=job_read(job)).model_dump_json()
    assert delivery.seq is not None
    entry = await sync_repository.get_entry(session, delivery.seq)
    assert entry is not None
    data = ProductFailedData(job_id=delivery.job_id, product=product_result(entry))
    return ProductFailed(timestamp=utcnow(), data=data).model_dump_json()
