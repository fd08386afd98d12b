"""Running one product of a sync job: plan once, download what was never seen, then apply
the whole new image set in one transaction, or change nothing.

Who runs it: the queue, `run_queued` under procrastinate and `SyncWorker` in embedded
mode (a product that needs no download was applied by its request, see `submit`). Every way ends the
product in a final status or queues it again with a reason: a run that raises counts as
an attempt (`record_crash`), and so does one that found the store refusing writes.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from functools import partial

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.kit.db import session_scope, utcnow
from imagesync.sync import repository
from imagesync.sync.apply import Planned, Requeue, apply_plan, plan_product
from imagesync.sync.context import SyncContext
from imagesync.sync.download import FetchDeduper, Fetched, Stored, download, record, reuse
from imagesync.sync.models import SyncJobProduct
from imagesync.sync.planner import Identity
from imagesync.sync.results import failed, failed_with, finish, note_error, superseded
from imagesync.sync.schemas import ImageError, ProductImagesIn
from imagesync.sync.submit import spec_of

log = structlog.get_logger(__name__)

LEASE = timedelta(minutes=5)
# Failures that are the service's, not the origin's: the product is tried again.
TRANSIENT = frozenset({"storage_error", "store_conflict"})


class ProductBusy(Exception):
    """Another runner holds the product's entry (an API process applying it inline)."""


class StorageUnavailable(Exception):
    """The store refused the product's downloads (or their blob was being collected): it
    is queued to be tried again."""


async def run_queued(ctx: SyncContext, seq: int) -> None:
    """Run one product as a queue's task (procrastinate): take the entry, run it, and
    on an unexpected error count the attempt (see `record_crash`) and raise, so the
    queue runs it again later. Raises `ProductBusy` while another runner holds it, and
    `StorageUnavailable` when it waits for the store."""
    async with session_scope(ctx.sessionmaker) as session:
        now = utcnow()
        if not await repository.claim_entry(session, seq, now, None):
            entry = await repository.get_entry(session, seq)
            if entry is not None and entry.status in ("queued", "running"):
                raise ProductBusy(seq)
            return  # finished already: a retried job finds nothing to do
    try:
        await run_entry(ctx, seq, ctx.fetches)
    except StorageUnavailable:
        raise
    except Exception as exc:
        if not await record_crash(ctx, seq, exc, backoff=False):
            raise


async def record_crash(ctx: SyncContext, seq: int, exc: BaseException, *, backoff: bool) -> bool:
    """A run of the product raised: after `ctx.max_attempts` runs it ends `failed` with
    `internal_error` (true); before that it is queued again (false), with `backoff` not
    to be claimed for a while (the embedded runner; procrastinate has its own)."""
    log.error("sync.product.crashed", seq=seq, error=repr(exc), exc_info=exc)
    async with session_scope(ctx.sessionmaker) as session:
        entry = await repository.get_entry(session, seq)
        if entry is None or entry.status not in ("queued", "running"):
            return True
        if entry.attempts >= ctx.max_attempts:
            # What went wrong is in the operator's log (above), not in the tenant's job.
            finish(
                entry,
                failed_with(
                    entry,
                    "internal_error",
                    f"gave up after {entry.attempts} attempts; the product's images were left "
                    "as they were",
                ),
            )
            return True
        _queue_again(entry, backoff=backoff)
        return False


def retry_delay(attempts: int) -> timedelta:
    """How long a product waits after its `attempts`-th failed run: 2, 4, 8 s ... 5 min."""
    return timedelta(seconds=min(2**attempts, 300))


def _queue_again(entry: SyncJobProduct, *, backoff: bool) -> None:
    entry.status = "queued"
    entry.lease_expires_at = utcnow() + retry_delay(entry.attempts) if backoff else None


async def run_entry(
    ctx: SyncContext,
    seq: int,
    fetches: FetchDeduper,
    *,
    backoff: bool = False,
) -> None:
    """Run one product of a job. Raises `StorageUnavailable` after queueing the product
    again (with `backoff`, not to be claimed for a while). Every event logged meanwhile
    names the product's `seq` and its `job`: the operator's details (a refused address,
    a server path) are found by the job a tenant asks about."""
    with structlog.contextvars.bound_contextvars(seq=seq, job=None):
        await _run_entry(ctx, seq, fetches, backoff=backoff)


async def _run_entry(ctx: SyncContext, seq: int, fetches: FetchDeduper, *, backoff: bool) -> None:
    async with session_scope(ctx.sessionmaker) as session:
        started = await _start(session, seq)
        if started is None:
            return
        planned, known = started
        account_id = planned.account_id

    # Downloads run outside any transaction; nothing of the product changes here.
    missing = {
        c.spec.identity: c.spec for c in planned.plan.creates if c.spec.identity.digest not in known
    }
    note = partial(_note_store_refused, ctx, seq)
    results = await asyncio.gather(
        *(
            fetches.fetch(
                account_id,
                identity,
                partial(
                    download,
                    ctx.fetcher,
                    ctx.blobs,
                    spec,
                    store_waits=ctx.store_waits,
                    on_store_refused=note,
                ),
            )
            for identity, spec in missing.items()
        )
    )
    outcomes = [outcome for outcome, _started in results]
    failures: dict[Identity, ImageError] = {
        identity: outcome
        for identity, outcome in zip(missing, outcomes, strict=True)
        if isinstance(outcome, ImageError)
    }
    fetched = {
        identity: outcome
        for identity, outcome in zip(missing, outcomes, strict=True)
        if isinstance(outcome, Fetched)
    }

    # Recorded in one transaction of their own, whatever becomes of the product: a
    # download is never repeated, even when applying it fails.
    stored = dict(known)
    if fetched:
        async with session_scope(ctx.sessionmaker) as session:
            recorded = await record(session, ctx.blobs.store, account_id, fetched)
        for identity, outcome in recorded.items():
            if isinstance(outcome, Stored):
                stored[identity.digest] = outcome
            else:
                failures[identity] = outcome
    # Downloads this product started; one it shared with another product counts there.
    downloaded = sum(
        1 for (outcome, started) in results if started and not isinstance(outcome, ImageError)
    )

    async with session_scope(ctx.sessionmaker) as session:
        entry = await repository.get_entry(session, seq)
        if entry is None or entry.status != "running":
            return
        if (
            failures
            and all(f.code in TRANSIENT for f in failures.values())
            and entry.attempts < ctx.max_attempts
        ):
            error = next(iter(failures.values()))
            delay = retry_delay(entry.attempts).total_seconds()
            note_error(
                entry,
                ImageError(
                    code=error.code,
                    detail=f"{error.detail}; tried again in {delay:g} s "
                    f"(attempt {entry.attempts} of {ctx.max_attempts})",
                ),
            )
            _queue_again(entry, backoff=backoff)
            log.warning("sync.product.retrying", seq=seq, code=error.code, attempts=entry.attempts)
        elif failures:
            finish(entry, failed(entry, planned.specs, failures, downloaded))
            log.info("sync.product.failed", seq=seq, item_number=entry.item_number)
            return
        else:
            await _apply(ctx, session, entry, planned, stored, downloaded)
            return
    raise StorageUnavailable(seq)


async def _start(session: AsyncSession, seq: int) -> tuple[Planned, dict[str, Stored]] | None:
    """Plan the running entry `seq` and find the blobs its plan can reuse (marked in use
    from now: the collector leaves them alone); None when there is nothing to run."""
    entry = await repository.get_entry(session, seq)
    if entry is None or entry.status != "running":
        return None
    structlog.contextvars.bind_contextvars(job=entry.job_id)
    payload = ProductImagesIn.model_validate(entry.request)
    product = await repository.get_product(session, entry.account_id, entry.item_number)
    if product is None:
        finish(
            entry,
            failed_with(
                entry, "product_not_found", f"the account has no product {entry.item_number!r}"
            ),
        )
        return None
    if product.last_applied_seq > seq:
        finish(entry, superseded(entry))
        return None
    specs = [spec_of(image) for image in payload.images]
    _, planned = await plan_product(session, product, specs, payload.use_sort_b2c)
    known = await reuse(
        session, entry.account_id, [c.spec.identity.digest for c in planned.plan.creates]
    )
    return planned, known


async def _apply(
    ctx: SyncContext,
    session: AsyncSession,
    entry: SyncJobProduct,
    planned: Planned,
    stored: dict[str, Stored],
    downloaded: int,
) -> None:
    seq = entry.seq
    product = await repository.get_product(session, entry.account_id, entry.item_number)
    if product is None or not await repository.take_product_for_seq(session, product.id, seq):
        result = (
            superseded(entry)
            if product is not None
            else failed_with(entry, "product_not_found", "the product was deleted")
        )
        finish(entry, result)
        return
    try:
        # Planned again from the images as they are now that the product is held: they
        # may have changed while this product was downloading.
        blob_ids, again = await plan_product(session, product, planned.specs, planned.use_sort_b2c)
        if (again.current, again.variants) != (planned.current, planned.variants):
            stored = await _with_sources(session, again, stored)
        result = await apply_plan(ctx, session, entry, product, blob_ids, again, stored, downloaded)
    except Requeue:
        # Nothing of the product changed; the next run downloads what it needs.
        await session.rollback()
        requeued = await repository.get_entry(session, seq)
        if requeued is not None and requeued.status == "running":
            requeued.status = "queued"
            requeued.lease_expires_at = None
        log.info("sync.product.requeued", seq=seq, reason="blob being collected")
        return
    finish(entry, result)
    log.info(
        "sync.product.applied",
        seq=seq,
        item_number=entry.item_number,
        **result.counts.model_dump(),
    )


async def _with_sources(
    session: AsyncSession, planned: Planned, stored: dict[str, Stored]
) -> dict[str, Stored]:
    """`stored` and the known sources of what `planned` creates beyond it; `Requeue` when
    one was never downloaded (the next run downloads it)."""
    unknown = [
        c.spec.identity.digest for c in planned.plan.creates if c.spec.identity.digest not in stored
    ]
    found = await repository.find_sources(session, planned.account_id, unknown)
    if len(found) < len(unknown):
        raise Requeue
    return stored | {key: Stored.of(s, s.blob) for key, s in found.items()}


async def _note_store_refused(ctx: SyncContext, seq: int, error: ImageError) -> None:
    """Show at once, on the job, that the product waits for the store."""
    async with session_scope(ctx.sessionmaker) as session:
        entry = await repository.get_entry(session, seq)
        if entry is not None and entry.status == "running":
            note_error(
                entry,
                ImageError(code=error.code, detail=f"{error.detail}; waiting for the store"),
            )
