"""What running a product needs, built once per process."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.fetch.downloader import SafeFetcher
from imagesync.queue import Queue
from imagesync.storage.context import Blobs
from imagesync.storage.store import BlobStore
from imagesync.sync.run.download import STORE_WAITS, FetchDeduper


@dataclass
class SyncContext:
    sessionmaker: async_sessionmaker[AsyncSession]
    fetcher: SafeFetcher
    blobs: Blobs
    # Products of one account running at once, across processes (see `claim_entry`).
    account_max_products: int = 4
    # For reads that write nothing (the API's GETs): on SQLite connections of their own,
    # beside its one writer (WAL); elsewhere `sessionmaker` itself.
    readers: async_sessionmaker[AsyncSession] | None = None
    store_waits: tuple[float, ...] = STORE_WAITS
    fetches: FetchDeduper = field(default_factory=FetchDeduper)

    @property
    def reads(self) -> async_sessionmaker[AsyncSession]:
        return self.readers or self.sessionmaker

    @property
    def queue(self) -> Queue:
        return self.blobs.queue

    @property
    def store(self) -> BlobStore:
        return self.blobs.store
