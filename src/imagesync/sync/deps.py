"""Request dependencies of image sync: the process's `SyncContext` and blob store, and
where a request's answers point for files."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from imagesync.storage.store import BlobStore
from imagesync.sync.reads.images import FileUrls
from imagesync.sync.run.context import SyncContext


async def _sync_context(request: Request) -> SyncContext:
    ctx: SyncContext = request.app.state.sync_context
    return ctx


async def _store(request: Request) -> BlobStore:
    ctx: SyncContext = request.app.state.sync_context
    return ctx.store


async def _file_urls(request: Request) -> FileUrls:
    return FileUrls(str(request.base_url), request.app.state.settings.public_base_url)


SyncContextDep = Annotated[SyncContext, Depends(_sync_context)]
FileUrlsDep = Annotated[FileUrls, Depends(_file_urls)]
StoreDep = Annotated[BlobStore, Depends(_store)]
