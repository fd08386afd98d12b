"""Request dependencies as `Annotated` aliases; process-wide resources live on app.state.
Each domain adds its own (`catalog.deps.AccountDep`, `sync.deps.SyncContextDep`).

Every dependency is `async def`, however little it does: FastAPI runs a plain `def` in
its thread pool, a trip to another thread and back through the event loop for what is
an attribute read (a sync request made four; tests/kit/test_request_costs.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.kit.db import session_scope
from imagesync.kit.settings import Settings


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with session_scope(sessionmaker) as session:
        yield session


async def _read_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.read_sessionmaker
    async with session_scope(sessionmaker) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(_settings)]
# scope="function": the commit runs before the response is sent, so a failed commit
# becomes a 500 instead of a success the client already received.
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]
# For routes that only read: on SQLite a connection beside the writer, so that a read
# never waits behind a write (and cannot write: `PRAGMA query_only`).
ReadSessionDep = Annotated[AsyncSession, Depends(_read_session, scope="function")]
