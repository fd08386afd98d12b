"""Image sync's tasks: running one product of a sync job (the queue owns its retries, see
`run.product.run_product`), calling a webhook (`webhooks.deliver`), and forgetting
idempotency keys and finished webhook deliveries past their lifetime."""

from __future__ import annotations

from datetime import timedelta

from imagesync.kit.db import session_scope, utcnow
from imagesync.queue import SYNC, WEBHOOKS, Attempt, Tasks
from imagesync.sync.intake import idempotency
from imagesync.sync.intake.submit import RUN_PRODUCT
from imagesync.sync.run import product
from imagesync.sync.run.context import SyncContext
from imagesync.sync.webhooks import deliver
from imagesync.sync.webhooks import repository as webhooks_repository
from imagesync.sync.webhooks.events import DELIVER


async def run_product(attempt: Attempt, seq: int) -> None:
    """Download what one product of a sync job needs, then apply it."""
    ctx: SyncContext = attempt.resources["sync"]
    await product.run_product(ctx, seq, attempt)


async def deliver_webhook(attempt: Attempt, delivery: str) -> None:
    """Make the next attempt of one webhook delivery."""
    ctx: SyncContext = attempt.resources["sync"]
    settings = attempt.resources["settings"]
    calls = deliver.Calls(
        ctx.sessionmaker,
        ctx.queue,
        ctx.fetcher,
        waits=settings.webhook_waits,
        timeout=settings.webhook_timeout_seconds,
    )
    await deliver.deliver(calls, delivery)


async def forget_idempotency_keys(attempt: Attempt) -> None:
    """Delete `Idempotency-Key`s past their lifetime (hourly)."""
    ctx: SyncContext = attempt.resources["sync"]
    hours = attempt.resources["settings"].idempotency_key_hours
    async with session_scope(ctx.sessionmaker) as session:
        await idempotency.forget_expired(session, lifetime=timedelta(hours=hours))


async def forget_webhook_deliveries(attempt: Attempt) -> None:
    """Delete the webhook deliveries that ended past their lifetime (daily)."""
    ctx: SyncContext = attempt.resources["sync"]
    days = attempt.resources["settings"].webhook_delivery_days
    async with session_scope(ctx.sessionmaker) as session:
        await webhooks_repository.delete_deliveries(session, before=utcnow() - timedelta(days=days))


def register(tasks: Tasks) -> None:
    tasks.task(RUN_PRODUCT, queue=SYNC)(run_product)
    tasks.task(DELIVER, queue=WEBHOOKS)(deliver_webhook)
    tasks.periodic("maintenance.forget_idempotency_keys", "27 * * * *")(forget_idempotency_keys)
    tasks.periodic("maintenance.forget_webhook_deliveries", "47 4 * * *")(forget_webhook_deliveries)
