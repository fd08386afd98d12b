"""Request dependencies as `Annotated` aliases; process-wide resources live on app.state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.catalog import service as catalog_service
from imagesync.catalog.models import Account
from imagesync.kit.db import session_scope
from imagesync.kit.settings import Settings
from imagesync.storage.blobs import BlobStore
from imagesync.sync.service import SyncContext


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _sync_context(request: Request) -> SyncContext:
    ctx: SyncContext = request.app.state.sync_context
    return ctx


def _store(request: Request) -> BlobStore:
    store: BlobStore = request.app.state.store
    return store


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with session_scope(sessionmaker) as session:
        yield session


async def _account(
    session: SessionDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Account:
    return await catalog_service.authenticate(session, authorization)


SettingsDep = Annotated[Settings, Depends(_settings)]
SyncContextDep = Annotated[SyncContext, Depends(_sync_context)]
StoreDep = Annotated[BlobStore, Depends(_store)]
# scope="function": the commit runs before the response is sent, so a failed commit
# becomes a 500 instead of a success the client already received.
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]
AccountDep = Annotated[Account, Depends(_account)]
