"""An account's webhook endpoints: registering (the URL is checked as image URLs are,
and its name resolved now), reading, enabling and deleting them, and reading their
deliveries."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.catalog.models import Account
from imagesync.fetch.downloader import SafeFetcher
from imagesync.fetch.errors import FetchError
from imagesync.fetch.guard import check_url
from imagesync.kit.db import utcnow
from imagesync.kit.errors import NotFound, Problem, ValidationFailed
from imagesync.kit.pagination import PageParams
from imagesync.sync.models import Webhook, WebhookDelivery
from imagesync.sync.webhooks import repository, signing
from imagesync.sync.webhooks.schemas import (
    MAX_WEBHOOKS,
    DeliveryAttempt,
    DeliveryPage,
    DeliveryRead,
    WebhookChange,
    WebhookCreate,
    WebhookCreated,
    WebhookRead,
)


def webhook_read(webhook: Webhook) -> WebhookRead:
    return WebhookRead(
        id=webhook.id,
        url=webhook.url,
        events=webhook.events,
        enabled=webhook.disabled_at is None,
        disabled_at=webhook.disabled_at,
        disabled_reason=webhook.disabled_reason,
        created_at=webhook.created_at,
    )


def delivery_read(delivery: WebhookDelivery) -> DeliveryRead:
    return DeliveryRead(
        id=delivery.id,
        event=delivery.event,
        job_id=delivery.job_id,
        status=delivery.status,
        reason=delivery.reason,
        created_at=delivery.created_at,
        next_attempt_at=delivery.next_attempt_at,
        attempts=[DeliveryAttempt.model_validate(a) for a in delivery.attempts],
    )


async def register(
    session: AsyncSession, fetcher: SafeFetcher, account: Account, body: WebhookCreate
) -> WebhookCreated:
    """Add an endpoint; its secret is in this answer only. Refused (422) when the account
    has `MAX_WEBHOOKS` already, or when the URL is one no call would be made to: the
    checks of an image URL in a sync request, which need no network (a literal address,
    a port, the URL's form). A host name's addresses are judged at each call, as a
    download's are."""
    if await repository.count_webhooks(session, account.id) >= MAX_WEBHOOKS:
        raise ValidationFailed(
            problems=[
                Problem(
                    detail=f"the account has {MAX_WEBHOOKS} webhooks, as many as it may",
                    code="too_many_webhooks",
                    title="Too many webhooks",
                )
            ]
        )
    try:
        check_url(body.url, allow=fetcher.allow, ports=fetcher.limits.ports)
    except FetchError as refusal:
        raise ValidationFailed(
            problems=[
                Problem(
                    detail=refusal.detail,
                    pointer="/url",
                    code=refusal.code,
                    title="URL not called",
                )
            ]
        ) from refusal
    webhook = Webhook(
        id=uuid.uuid4().hex,
        account_id=account.id,
        url=body.url,
        events=list(body.events),
        secret=signing.new_secret(),
        created_at=utcnow(),
    )
    await repository.add_webhook(session, webhook)
    return WebhookCreated(**webhook_read(webhook).model_dump(), secret=webhook.secret)


async def list_all(session: AsyncSession, account: Account) -> list[WebhookRead]:
    return [webhook_read(w) for w in await repository.list_webhooks(session, account.id)]


async def get(session: AsyncSession, account: Account, webhook_id: str) -> Webhook:
    webhook = await repository.get_webhook(session, account.id, webhook_id)
    if webhook is None:
        raise NotFound(f"No webhook {webhook_id!r}")
    return webhook


async def change(
    session: AsyncSession, account: Account, webhook_id: str, body: WebhookChange
) -> WebhookRead:
    webhook = await get(session, account, webhook_id)
    if body.enabled:
        webhook.disabled_at, webhook.disabled_reason = None, None
    elif webhook.disabled_at is None:
        webhook.disabled_at, webhook.disabled_reason = utcnow(), "disabled by the account"
    return webhook_read(webhook)


async def delete(session: AsyncSession, account: Account, webhook_id: str) -> None:
    """Delete an endpoint and its deliveries (those still to be tried are dropped)."""
    if not await repository.delete_webhook(session, account.id, webhook_id):
        raise NotFound(f"No webhook {webhook_id!r}")


async def deliveries(
    session: AsyncSession, account: Account, webhook_id: str, page: PageParams
) -> DeliveryPage:
    webhook = await get(session, account, webhook_id)
    total, rows = await repository.deliveries(
        session, webhook.id, offset=page.offset, limit=page.limit
    )
    return DeliveryPage(deliveries=[delivery_read(d) for d in rows], meta=page.meta(total))
