"""`/webhooks`: an account's endpoints, called when its sync jobs end."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from imagesync.catalog.deps import AccountDep
from imagesync.fetch.downloader import SafeFetcher
from imagesync.kit.deps import SessionDep
from imagesync.kit.errors import ErrorResponse
from imagesync.kit.pagination import PageDep
from imagesync.kit.routes import StrictRoute
from imagesync.kit.schemas import Identifier
from imagesync.sync.webhooks import service
from imagesync.sync.webhooks.schemas import (
    DeliveryPage,
    WebhookChange,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookRead,
)

ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorResponse, "description": "Not found"},
    422: {"model": ErrorResponse, "description": "Invalid request; one error per problem"},
}


async def _fetcher(request: Request) -> SafeFetcher:
    """The process's downloader: its address checks judge an endpoint's URL."""
    fetcher: SafeFetcher = request.app.state.sync_context.fetcher
    return fetcher


FetcherDep = Annotated[SafeFetcher, Depends(_fetcher)]

router = APIRouter(responses=ERRORS, route_class=StrictRoute, tags=["webhooks"])


@router.post("/webhooks", status_code=201)
async def create_webhook(
    body: WebhookCreate, session: SessionDep, account: AccountDep, fetcher: FetcherDep
) -> WebhookCreated:
    """Register an endpoint for events of the account's sync jobs. Each call is signed as
    Standard Webhooks says (`webhook-id`, `webhook-timestamp`, `webhook-signature`) with
    the `secret` of this answer, which is shown only here. Jobs recorded from now on are
    announced."""
    return await service.register(session, fetcher, account, body)


@router.get("/webhooks")
async def list_webhooks(session: SessionDep, account: AccountDep) -> WebhookList:
    """The account's endpoints, enabled or not."""
    return WebhookList(webhooks=await service.list_all(session, account))


@router.get("/webhooks/{webhook_id}")
async def read_webhook(
    webhook_id: Identifier, session: SessionDep, account: AccountDep
) -> WebhookRead:
    """One endpoint: whether it is enabled, and if not, since when and why."""
    return service.webhook_read(await service.get(session, account, webhook_id))


@router.patch("/webhooks/{webhook_id}")
async def change_webhook(
    webhook_id: Identifier, body: WebhookChange, session: SessionDep, account: AccountDep
) -> WebhookRead:
    """Enable an endpoint again (after a delivery gave up on it), or disable it."""
    return await service.change(session, account, webhook_id, body)


@router.delete("/webhooks/{webhook_id}", status_code=204)
async def delete_webhook(
    webhook_id: Identifier, session: SessionDep, account: AccountDep
) -> Response:
    """Delete an endpoint, with its deliveries; none is tried again."""
    await service.delete(session, account, webhook_id)
    return Response(status_code=204)


@router.get("/webhooks/{webhook_id}/deliveries")
async def list_deliveries(
    webhook_id: Identifier, session: SessionDep, account: AccountDep, page: PageDep
) -> DeliveryPage:
    """The endpoint's deliveries, newest first: each attempt's time, answer and error."""
    return await service.deliveries(session, account, webhook_id, page)
