"""Request dependencies of image sync: the process's `SyncContext` and blob store."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from imagesync.storage.store import BlobStore
from imagesync.sync.run.context import SyncContext


def _sync_context(request: Request) -> SyncContext:
    ctx: SyncContext = request.app.state.sync_context
    return ctx


def _store(request: Request) -> BlobStore:
    ctx: SyncContext = request.app.state.sync_context
    return ctx.store


SyncContextDep = Annotated[SyncContext, Depends(_sync_context)]
StoreDep = Annotated[BlobStore, Depends(_store)]
