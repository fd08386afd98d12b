"""Running one product of a sync job: plan once, download what was never seen, then apply
the whole new image set, or change nothing. Two transactions: one takes the product and
reads everything its run needs; downloads run outside any; one records the downloads,
applies the plan and queues the renditions.

Who runs it: the queue, `run_queued` under procrastinate and `SyncWorker` in embedded
mode (a product that needs no download was applied by its request, see `submit`). Every
way ends the product in a final status or queues it again with a reason: a run that
raises counts as an attempt (`record_crash`), and so does one that found the store
refusing writes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.kit.db import session_scope, utcnow
from imagesync.storage import repository as blob_repository
from imagesync.sync import repository
from imagesync.sync.apply import Planned, Requeue, apply_plan, plan_product
from imagesync.sync.context import SyncContext
from imagesync.sync.download import FetchDeduper, Fetched, Stored, download, record, reuse
from imagesync.sync.models import SyncJobProduct
from imagesync.sync.planner import Identity
from imagesync.sync.results import failed, failed_with, finish, note_error, superseded
from imagesync.sync.schemas import ImageError
from imagesync.sync.submit import specs_of_request

log = structlog.get_logger(__name__)

LEASE = timedelta(minutes=5)
# Failures that are the service's, not the origin's: the product is tried again.
TRANSIENT = frozenset({"storage_error", "store_conflict"})
# Times a run re-plans at apply when the catalog keeps changing the product meanwhile.
REPLANS = 3


class ProductBusy(Exception):
    """The product cannot be taken now: another runner holds its entry, or its account
    has as many products running as it may (`account_max_products`). It is looked at
    again soon."""


class StorageUnavailable(Exception):
    """The store refused the product's downloads (or their blob was being collected): it
    is queued to be tried again."""


async def run_queued(ctx: SyncContext, seq: int) -> None:
    """Run one product as a queue's task (procrastinate): on an unexpected error count the
    attempt (see `record_crash`) and raise, so the queue runs it again later. Raises
    `ProductBusy` while another runner holds it, and `StorageUnavailable` when it waits
    for the store."""
    try:
        await run_entry(ctx, seq, ctx.fetches)
    except (StorageUnavailable, ProductBusy):
        raise
    except Exception as exc:
        if not await record_crash(ctx, seq, exc, backoff=False):
            raise


async def record_crash(
    ctx: SyncContext, seq: int, exc: BaseException, *, backoff: bool, runner: str | None = None
) -> bool:
    """A run of the product raised: after `ctx.max_attempts` runs it ends `failed` with
    `internal_error` (true); before that it is queued again (false), with `backoff` not
    to be claimed for a while (the embedded runner; procrastinate has its own). With a
    `runner`, only while that runner holds it: a run that failed before it took the
    product leaves another runner's alone."""
    log.error("sync.product.crashed", seq=seq, error=repr(exc), exc_info=exc)
    async with session_scope(ctx.sessionmaker) as session:
        entry = await repository.get_entry(session, seq)
        if entry is None or entry.status not in ("queued", "running"):
            return True
        if runner is not None and entry.runner != runner:
            return False
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
    lease: timedelta | None = None,
    backoff: bool = False,
) -> None:
    """Take and run one product of a job: with a `lease` for this process's runner
    (embedded), without one under procrastinate (the queue answers for liveness). Raises
    `ProductBusy` when another runner holds it, and `StorageUnavailable` after queueing
    it again (with `backoff`, not to be claimed for a while). Every event logged
    meanwhile names the product's `seq` and `job`: the operator's details (a refused
    address, a server path) are found by the job a tenant asks about."""
    with structlog.contextvars.bound_contextvars(seq=seq, job=None):
        await _run_entry(ctx, seq, fetches, lease=lease, backoff=backoff)


@dataclass(frozen=True)
class _Taken:
    planned: Planned
    blob_ids: dict[str, int]  # the blob of each current image, by image id
    known: dict[str, Stored]


async def _run_entry(
    ctx: SyncContext,
    seq: int,
    fetches: FetchDeduper,
    *,
    lease: timedelta | None,
    backoff: bool,
) -> None:
    async with session_scope(ctx.sessionmaker) as session:
        taken = await _take(ctx, session, seq, lease)
    if taken is None:
        return
    planned, known = taken.planned, taken.known

    # Downloads run outside any transaction; nothing of the product changes here.
    missing = {
        c.spec.identity: c.spec for c in planned.plan.creates if c.spec.identity.digest not in known
    }
    note = partial(_note_store_refused, ctx, seq)
    results = await asyncio.gather(
        *(
            fetches.fetch(
                planned.account_id,
                identity,
                partial(
                    download,
                    ctx.fetcher,
                    ctx.blobs,
                    spec,
                    store_waits=ctx.store_waits,
                    on_store_refused=note,
                    share=str(planned.account_id),
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
    # Downloads this product started; one it shared with another product counts there.
    downloaded = sum(
        1 for (outcome, started) in results if started and not isinstance(outcome, ImageError)
    )

    try:
        async with session_scope(ctx.sessionmaker) as session:
            # Recorded whatever becomes of the product: a download is never repeated, even
            # when the product fails or is tried again.
            stored = dict(known)
            if fetched:
                recorded = await record(session, ctx.blobs.store, planned.account_id, fetched)
                for identity, outcome in recorded.items():
                    if isinstance(outcome, Stored):
                        stored[identity.digest] = outcome
                    else:
                        failures[identity] = outcome
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
                log.warning("sync.product.retrying", code=error.code, attempts=entry.attempts)
            elif failures:
                finish(entry, failed(entry, planned.specs, failures, downloaded))
                log.info("sync.product.failed", item_number=entry.item_number)
                return
            elif await _apply(ctx, session, entry, planned, taken.blob_ids, stored, downloaded):
                return
            else:
                _queue_again(entry, backoff=False)
                log.info(
                    "sync.product.requeued", reason="a blob being collected, or a busy product"
                )
                return
    except Exception:
        if fetched:
            await _record_alone(ctx, planned.account_id, fetched)
        raise
    raise StorageUnavailable(seq)


async def _record_alone(
    ctx: SyncContext, account_id: int, fetched: dict[Identity, Fetched]
) -> None:
    """The transaction that was to record these downloads and apply the product failed
    (the apply crashed, the database went away): record them on their own, so that the
    next run does not download them again."""
    try:
        async with session_scope(ctx.sessionmaker) as session:
            await record(session, ctx.blobs.store, account_id, fetched)
    except Exception:
        log.exception("sync.downloads.not_recorded", downloads=len(fetched))


async def _take(
    ctx: SyncContext, session: AsyncSession, seq: int, lease: timedelta | None
) -> _Taken | None:
    """Claim the entry `seq`, plan it and find the blobs its plan can reuse (marked in
    use from now: the collector leaves them alone); None when there is nothing to run."""
    now = utcnow()
    runner = ctx.runner if lease is not None else None
    claimed = await repository.claim_entry(
        session,
        seq,
        now,
        now + lease if lease is not None else None,
        runner,
        account_max=ctx.account_max_products,
    )
    if claimed is None:
        entry = await repository.get_entry(session, seq)
        if entry is not None and entry.status in ("queued", "running"):
            raise ProductBusy(seq)
        return None  # finished already: a retried job finds nothing to do
    structlog.contextvars.bind_contextvars(job=claimed.job_id)
    product = await repository.get_product(session, claimed.account_id, claimed.item_number)
    if product is None or product.last_applied_seq > seq:
        entry = await repository.get_entry(session, seq)
        assert entry is not None
        finish(
            entry,
            superseded(entry)
            if product is not None
            else failed_with(
                entry, "product_not_found", f"the account has no product {entry.item_number!r}"
            ),
        )
        return None
    specs = specs_of_request(claimed.request)
    blob_ids, planned = await plan_product(
        session, product, specs, claimed.request.get("use_sort_b2c")
    )
    known = await reuse(
        session, claimed.account_id, [c.spec.identity.digest for c in planned.plan.creates]
    )
    return _Taken(planned, blob_ids, known)


async def _apply(
    ctx: SyncContext,
    session: AsyncSession,
    entry: SyncJobProduct,
    planned: Planned,
    blob_ids: dict[str, int],
    stored: dict[str, Stored],
    downloaded: int,
) -> bool:
    """Apply the product in the caller's transaction, after its downloads were recorded
    there; false, having changed nothing, when a blob its plan counted on is being
    collected (the product is queued again)."""
    linked = {stored[c.spec.identity.digest].blob_id for c in planned.plan.creates}
    if await blob_repository.touch_blobs(session, linked, utcnow()) != linked:
        return False  # the collector took one between the plan and now
    for _ in range(REPLANS):
        product = await repository.get_product(session, entry.account_id, entry.item_number)
        if product is None:
            finish(entry, failed_with(entry, "product_not_found", "the product was deleted"))
            return True
        if product.last_applied_seq > entry.seq:
            finish(entry, superseded(entry))
            return True
        if product.images_version != planned.version:
            # The catalog or another sync changed the product since it was planned.
            blob_ids, planned = await plan_product(
                session, product, planned.specs, planned.use_sort_b2c
            )
            try:
                stored = await _with_sources(session, planned, stored)
            except Requeue:
                return False
        if await repository.take_product_for_seq(
            session, product.id, entry.seq, version=planned.version
        ):
            break
        # Changed again between the read and the take: read it once more.
    else:
        return False
    result = await apply_plan(ctx, session, entry, product, blob_ids, planned, stored, downloaded)
    finish(entry, result)
    log.info("sync.product.applied", item_number=entry.item_number, **result.counts.model_dump())
    return True


async def _with_sources(
    session: AsyncSession, planned: Planned, stored: dict[str, Stored]
) -> dict[str, Stored]:
    """`stored` and the known sources of what `planned` creates beyond it, marked in use;
    `Requeue` when one was never downloaded (the next run downloads it)."""
    unknown = [
        c.spec.identity.digest for c in planned.plan.creates if c.spec.identity.digest not in stored
    ]
    found = await reuse(session, planned.account_id, unknown)
    if len(found) < len(unknown):
        raise Requeue
    return stored | found


async def _note_store_refused(ctx: SyncContext, seq: int, error: ImageError) -> None:
    """Show at once, on the job, that the product waits for the store."""
    async with session_scope(ctx.sessionmaker) as session:
        entry = await repository.get_entry(session, seq)
        if entry is not None and entry.status == "running":
            note_error(
                entry,
                ImageError(code=error.code, detail=f"{error.detail}; waiting for the store"),
            )
