"""All SQL of webhooks. Every query an account's request makes is scoped by `account_id`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.sync.models import UNFINISHED, SyncJob, SyncJobProduct, Webhook, WebhookDelivery


async def add_webhook(session: AsyncSession, webhook: Webhook) -> None:
    session.add(webhook)
    await session.flush()


async def count_webhooks(session: AsyncSession, account_id: int) -> int:
    stmt = select(func.count()).where(Webhook.account_id == account_id)
    return int(await session.scalar(stmt) or 0)


async def list_webhooks(session: AsyncSession, account_id: int) -> Sequence[Webhook]:
    stmt = (
        select(Webhook)
        .where(Webhook.account_id == account_id)
        .order_by(Webhook.created_at, Webhook.id)
    )
    return (await session.scalars(stmt)).all()


async def get_webhook(session: AsyncSession, account_id: int, webhook_id: str) -> Webhook | None:
    stmt = select(Webhook).where(Webhook.id == webhook_id, Webhook.account_id == account_id)
    return await session.scalar(stmt)


async def delete_webhook(session: AsyncSession, account_id: int, webhook_id: str) -> bool:
    stmt = delete(Webhook).where(Webhook.id == webhook_id, Webhook.account_id == account_id)
    result = await session.execute(stmt)
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def enabled_webhooks(session: AsyncSession, account_id: int) -> Sequence[Webhook]:
    stmt = select(Webhook).where(Webhook.account_id == account_id, Webhook.disabled_at.is_(None))
    return (await session.scalars(stmt)).all()


async def job_notifies(session: AsyncSession, job_id: str) -> bool:
    """Whether the job announces its end; on PostgreSQL its row is held until the
    transaction ends, so that of two products of it ending at once, the second sees the
    first (`events.product_ended`). SQLite has one writer: they never overlap."""
    stmt = select(SyncJob.notify).where(SyncJob.id == job_id)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return bool(await session.scalar(stmt))


async def unfinished_entries(session: AsyncSession, job_id: str) -> int:
    stmt = select(func.count()).where(SyncJobProduct.job_id == job_id, UNFINISHED)
    return int(await session.scalar(stmt) or 0)


DELIVERIES = cast(Table, WebhookDelivery.__table__)


async def add_deliveries(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(DELIVERIES), rows)


async def get_delivery(
    session: AsyncSession, delivery_id: str
) -> tuple[WebhookDelivery, Webhook] | None:
    """A delivery and its endpoint, whatever their account (the delivery task)."""
    stmt = (
        select(WebhookDelivery, Webhook)
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(WebhookDelivery.id == delivery_id)
    )
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else (row[0], row[1])


async def deliveries(
    session: AsyncSession, webhook_id: str, *, offset: int, limit: int
) -> tuple[int, Sequence[WebhookDelivery]]:
    """A page of an endpoint's deliveries, newest first, and how many it has."""
    total = await session.scalar(
        select(func.count()).where(WebhookDelivery.webhook_id == webhook_id)
    )
    stmt = (
        select(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook_id)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return int(total or 0), (await session.scalars(stmt)).all()


async def delete_deliveries(session: AsyncSession, *, before: datetime) -> int:
    """Delete the deliveries that ended (delivered or failed) and were made before then."""
    stmt = delete(WebhookDelivery).where(
        WebhookDelivery.status != "pending", WebhookDelivery.created_at < before
    )
    result = await session.execute(stmt)
    return int(result.rowcount)  # type: ignore[attr-defined]
