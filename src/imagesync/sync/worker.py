"""The embedded worker: finds queued products of jobs in the database and runs them
inside `imagesync serve`.

Durable by construction: the queue is the `sync_job_product` table. A run claims its
product in its first transaction (`run.run_entry`); the claim is a lease, renewed while
the product runs, and names the process that holds it (`runner`). A
process that dies is noticed at once, not when its leases run out: on SQLite the one
process that starts again takes back everything; on PostgreSQL each process holds an
advisory lock while it lives, and any process that finds a runner's lock free takes
that runner's products back (at start, and every `RECLAIM_SECONDS`). Running a product
twice is harmless (see `take_product_for_seq`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from imagesync.kit.aio import wait_event
from imagesync.kit.db import session_scope, utcnow
from imagesync.sync import repository
from imagesync.sync.context import SyncContext
from imagesync.sync.run import (
    LEASE,
    ProductBusy,
    StorageUnavailable,
    record_crash,
    run_entry,
)

log = structlog.get_logger(__name__)

IDLE_POLL_SECONDS = 2.0
RECLAIM_SECONDS = 10.0


class SyncWorker:
    def __init__(
        self,
        ctx: SyncContext,
        *,
        concurrency: int = 4,
        lease: timedelta = LEASE,
        sole_worker: bool = False,
    ) -> None:
        self.ctx = ctx
        self.sole_worker = sole_worker
        self.concurrency = concurrency
        self.lease = lease
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._inflight: set[int] = set()  # seqs of the runs of this process
        self._loop_task: asyncio.Task[None] | None = None
        self._liveness: AsyncConnection | None = None
        self._reclaimed_at = 0.0

    def busy(self) -> bool:
        """Whether products are running (downloading or applying) right now."""
        return bool(self._running)

    def wake(self) -> None:
        """Look for work now (called after a job is committed)."""
        self._wake.set()

    async def start(self) -> None:
        if self.sole_worker:
            # Nobody else can be running these: they were cut off by a stop or a crash.
            async with session_scope(self.ctx.sessionmaker) as session:
                resumed = await repository.release_running(session)
            if resumed:
                log.info("sync.worker.resumed", products=resumed)
        elif self._postgresql:
            engine = self.ctx.sessionmaker.kw["bind"]
            self._liveness = await engine.connect()
            await self._liveness.execution_options(isolation_level="AUTOCOMMIT")
            await repository.hold_runner(self._liveness, self.ctx.runner)
            await self._reclaim()
        self._loop_task = asyncio.create_task(self._loop(), name="sync-worker")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        cut_off = sorted(self._inflight)
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        # They are queued again: at the next start here, or by another process.
        log.info("sync.worker.stopped", handed_back=cut_off)
        if self._liveness is not None:
            await self._liveness.close()  # the advisory lock goes with the connection

    @property
    def _postgresql(self) -> bool:
        return bool(self.ctx.sessionmaker.kw["bind"].dialect.name == "postgresql")

    async def _reclaim(self) -> None:
        """Queue again the products of runners whose process is gone (PostgreSQL)."""
        self._reclaimed_at = time.monotonic()
        async with session_scope(self.ctx.sessionmaker) as session:
            runners = await repository.other_runners(session, self.ctx.runner)
        for runner in runners:
            async with session_scope(self.ctx.sessionmaker) as session:
                if await repository.runner_is_gone(session, runner):
                    taken = await repository.release_running(session, runner)
                    log.info("sync.worker.reclaimed", runner=runner, products=taken)

    async def _loop(self) -> None:
        while True:
            try:
                if self._liveness is not None and (
                    time.monotonic() - self._reclaimed_at > RECLAIM_SECONDS
                ):
                    await self._reclaim()
                found = await self._candidates(self.concurrency - len(self._running))
            except Exception:
                log.exception("sync.worker.claim_failed")
                found = []
            for seq in found:
                self._inflight.add(seq)
                task = asyncio.create_task(self._run(seq), name=f"sync-product-{seq}")
                self._running.add(task)
                task.add_done_callback(self._done)
            if not found or len(self._running) >= self.concurrency:
                self._wake.clear()
                await wait_event(self._wake, IDLE_POLL_SECONDS)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wake.set()

    async def _candidates(self, slots: int) -> list[int]:
        """Products that may be claimed now, other than this process's own runs."""
        if slots <= 0:
            return []
        async with session_scope(self.ctx.sessionmaker) as session:
            found = await repository.claimable_entries(
                session,
                utcnow(),
                slots + len(self._inflight),
                account_max=self.ctx.account_max_products,
            )
        return [seq for seq in found if seq not in self._inflight][:slots]

    async def _run(self, seq: int) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(seq), name=f"lease-{seq}")
        try:
            await run_entry(self.ctx, seq, self.ctx.fetches, lease=self.lease, backoff=True)
        except asyncio.CancelledError:
            raise
        except ProductBusy:
            pass  # another runner took it first
        except StorageUnavailable:
            pass  # queued again, not to be claimed before its backoff
        except Exception as exc:
            try:
                await record_crash(self.ctx, seq, exc, backoff=True, runner=self.ctx.runner)
            except Exception:
                # Left running: the lease expires and the product is tried again.
                log.exception("sync.product.crash_not_recorded", seq=seq)
        finally:
            self._inflight.discard(seq)
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _heartbeat(self, seq: int) -> None:
        """Extend the lease while the product runs, so a long download (a slow origin,
        hundreds of images) is not taken for a dead worker's and run twice. A worker
        that dies stops renewing, and its lease runs out as before."""
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            try:
                async with session_scope(self.ctx.sessionmaker) as session:
                    await repository.extend_lease(
                        session, seq, utcnow() + self.lease, self.ctx.runner
                    )
            except Exception:
                log.exception("sync.lease.renew_failed", seq=seq)
