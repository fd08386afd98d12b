"""Running one product of a sync job: plan once, download what was never seen (and ask
the origins of the known images asked to be refreshed whether their bytes changed), then
apply the whole new image set, or change nothing. Two transactions: one takes the product
and reads everything its run needs; downloads run outside any; one records the
downloads, applies the plan and queues the renditions.

The queue runs it (`sync.tasks`), and owns its retries: a run that raises is a failed
attempt, tried again after the queue's backoff; on its final attempt the product ends
`failed` instead. A product that needs no download was applied by its request (`submit`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.kit.db import session_scope, utcnow
from imagesync.queue import Attempt, RetrySoon
from imagesync.storage import repository as blob_repository
from imagesync.sync import metrics, repository
from imagesync.sync.core.planner import Identity, ImageSpec
from imagesync.sync.models import SyncJobProduct
from imagesync.sync.results import failed, failed_with, finish, note_error, superseded
from imagesync.sync.run.apply import Planned, Requeue, apply_plan, plan_product, specs_of_request
from imagesync.sync.run.context import SyncContext
from imagesync.sync.run.download import (
    Fetched,
    Stored,
    Unchanged,
    download,
    record,
    remember_validators,
    reuse,
)
from imagesync.sync.schemas import ImageError, ProductResult, Refresh
from imagesync.sync.webhooks import events

log = structlog.get_logger(__name__)

# Failures that are the service's, not the origin's: the product is tried again.
TRANSIENT = frozenset({"storage_error", "store_conflict"})
# Times a run re-plans at apply when the catalog keeps changing the product meanwhile.
REPLANS = 3


class ProductBusy(RetrySoon):
    """The product cannot be taken now: its account has as many products running as it
    may (`account_max_products`). It is looked at again soon."""


class StorageUnavailable(Exception):
    """The store refused the product's downloads: it is queued to be tried again after
    the queue's backoff."""


async def run_product(ctx: SyncContext, seq: int, attempt: Attempt) -> None:
    """Take and run one product of a job. Raises `ProductBusy` when its account is at its
    share, and any failure of a run that is not the final attempt (the queue retries
    it); the final one ends the product `failed`. Every event logged meanwhile names the
    product's `seq` and `job`: the operator's details (a refused address, a server path)
    are found by the job a tenant asks about."""
    with structlog.contextvars.bound_contextvars(seq=seq, job=None):
        try:
            await _run(ctx, seq, attempt)
        except (RetrySoon, StorageUnavailable):
            raise  # the product says why on the job, and the queue tries it again
        except Exception as exc:
            log.error("sync.product.crashed", attempt=attempt.number, error=repr(exc), exc_info=exc)
            await _after_crash(ctx, seq, attempt)
            if not attempt.final:
                raise


async def _after_crash(ctx: SyncContext, seq: int, attempt: Attempt) -> None:
    """A run raised: the product waits for its next attempt, or after the final one
    ends `failed`, its images left as they were."""
    async with session_scope(ctx.sessionmaker) as session:
        entry = await repository.get_entry(session, seq)
        if entry is None or entry.status not in ("queued", "running"):
            return
        if not attempt.final:
            entry.status = "queued"
            return
        # What went wrong is in the operator's log, not in the tenant's job.
        await _end(
            ctx,
            session,
            entry,
            failed_with(
                entry,
                "internal_error",
                f"gave up after {attempt.number} attempts; the product's images were left "
                "as they were",
            ),
        )


@dataclass(frozen=True)
class _Taken:
    planned: Planned
    blob_ids: dict[str, int]  # the blob of each current image, by image id
    known: dict[str, Stored]
    notifies: bool  # whether the job announces its end

    def refreshing(self) -> dict[Identity, tuple[ImageSpec, Stored]]:
        """The known identities the plan keeps or creates that ask to be refreshed."""
        plan = self.planned.plan
        return {
            spec.identity: (spec, self.known[spec.identity.digest])
            for spec in [c.spec for c in plan.creates] + [k.spec for k in plan.keeps]
            if spec.refresh and spec.identity.digest in self.known
        }


async def _run(ctx: SyncContext, seq: int, attempt: Attempt) -> None:
    async with session_scope(ctx.sessionmaker) as session:
        taken = await _take(ctx, session, seq)
    if taken is None:
        return
    planned, known = taken.planned, taken.known

    # Downloads run outside any transaction; nothing of the product changes here.
    missing = {
        c.spec.identity: c.spec for c in planned.plan.creates if c.spec.identity.digest not in known
    }
    refreshing = taken.refreshing()
    note = partial(_note_store_refused, ctx, seq)
    start = partial(
        download,
        ctx.fetcher,
        ctx.blobs,
        store_waits=ctx.store_waits,
        on_store_refused=note,
        share=str(planned.account_id),
    )
    asked = [(identity, spec, None) for identity, spec in missing.items()] + [
        (identity, spec, stored) for identity, (spec, stored) in refreshing.items()
    ]
    results = await asyncio.gather(
        *(
            ctx.fetches.fetch(
                planned.account_id,
                identity,
                partial(start, spec, known=stored),
                refresh=stored is not None,
            )
            for identity, spec, stored in asked
        )
    )
    failures: dict[Identity, ImageError] = {}
    fetched: dict[Identity, Fetched] = {}
    unchanged: dict[Identity, Unchanged] = {}
    downloaded = 0  # by this product; one it shared with another product counts there
    for (identity, _spec, _stored), (outcome, started) in zip(asked, results, strict=True):
        if isinstance(outcome, ImageError):
            failures[identity] = outcome
            continue
        if isinstance(outcome, Fetched):
            fetched[identity] = outcome
        else:
            unchanged[identity] = outcome
        downloaded += started and (isinstance(outcome, Fetched) or outcome.size is not None)
    # What the origin of each image asked to be refreshed said, by identity digest.
    revalidated: dict[str, Refresh] = {
        identity.digest: "refreshed" if identity in fetched else "unchanged"
        for identity in refreshing
        if identity not in failures
    }

    busy = False
    try:
        async with session_scope(ctx.sessionmaker) as session:
            # Recorded whatever becomes of the product: a download is never repeated, even
            # when the product fails or is tried again.
            stored = dict(known)
            if fetched:
                recorded = await record(session, ctx.blobs.store, planned.account_id, fetched)
                for identity, made in recorded.items():
                    if isinstance(made, Stored):
                        stored[identity.digest] = made
                    else:
                        failures[identity] = made
            await remember_validators(
                session, [(refreshing[i][1], u) for i, u in unchanged.items()]
            )
            entry = await repository.get_entry(session, seq)
            if entry is None or entry.status != "running":
                return
            if (
                failures
                and all(f.code in TRANSIENT for f in failures.values())
                and not attempt.final
            ):
                error = next(iter(failures.values()))
                note_error(
                    entry,
                    ImageError(
                        code=error.code,
                        detail=f"{error.detail}; tried again in {attempt.next_in:g} s "
                        f"(attempt {attempt.number} of {attempt.max_attempts})",
                    ),
                )
                entry.status = "queued"
                log.warning("sync.product.retrying", code=error.code, attempt=attempt.number)
            elif failures:
                await _end(
                    ctx,
                    session,
                    entry,
                    failed(entry, planned.specs, failures, downloaded),
                    notifies=taken.notifies,
                )
                log.info("sync.product.failed", item_number=entry.item_number)
                return
            elif await _apply(
                ctx,
                session,
                entry,
                planned,
                taken.blob_ids,
                stored,
                downloaded,
                revalidated,
                notifies=taken.notifies,
            ):
                return
            else:
                entry.status = "queued"
                log.info(
                    "sync.product.requeued", reason="a blob being collected, or a busy product"
                )
                busy = True
    except Exception:
        if fetched:
            await _record_alone(ctx, planned.account_id, fetched)
        raise
    raise RetrySoon(seq) if busy else StorageUnavailable(seq)


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


async def _take(ctx: SyncContext, session: AsyncSession, seq: int) -> _Taken | None:
    """Claim the entry `seq`, plan it and find the blobs its plan can reuse (marked in
    use from now: the collector leaves them alone); None when there is nothing to run."""
    claimed = await repository.claim_entry(session, seq, account_max=ctx.account_max_products)
    if claimed is None:
        entry = await repository.get_entry(session, seq)
        if entry is not None and entry.status in ("queued", "running"):
            raise ProductBusy(seq)
        return None  # finished already: a retried job finds nothing to do
    structlog.contextvars.bind_contextvars(job=claimed.job_id)
    product = await repository.product_for_run(session, claimed.account_id, claimed.item_number)
    if product is None or product.last_applied_seq > seq:
        entry = await repository.get_entry(session, seq)
        assert entry is not None
        await _end(
            ctx,
            session,
            entry,
            superseded(entry)
            if product is not None
            else failed_with(
                entry, "product_not_found", f"the account has no product {entry.item_number!r}"
            ),
            notifies=claimed.notifies,
        )
        return None
    specs = specs_of_request(claimed.request)
    blob_ids, planned = await plan_product(
        session, product, specs, claimed.request.get("use_sort_b2c")
    )
    refreshed = [k.spec.identity.digest for k in planned.plan.keeps if k.spec.refresh]
    known = await reuse(
        session,
        claimed.account_id,
        [c.spec.identity.digest for c in planned.plan.creates] + refreshed,
    )
    return _Taken(planned, blob_ids, known, claimed.notifies)


async def _apply(
    ctx: SyncContext,
    session: AsyncSession,
    entry: SyncJobProduct,
    planned: Planned,
    blob_ids: dict[str, int],
    stored: dict[str, Stored],
    downloaded: int,
    revalidated: dict[str, Refresh],
    *,
    notifies: bool,
) -> bool:
    """Apply the product in the caller's transaction, after its downloads were recorded
    there; false, having changed nothing, when a blob its plan counted on is being
    collected (the product is queued again)."""
    # A refreshed image's new bytes were touched as they were recorded, and the bytes of
    # a source that an image comes from are never collected: only the creates' to check.
    linked = {stored[c.spec.identity.digest].blob_id for c in planned.plan.creates}
    if await blob_repository.touch_blobs(session, linked, utcnow()) != linked:
        return False  # the collector took one between the plan and now
    for _ in range(REPLANS):
        product = await repository.product_for_run(session, entry.account_id, entry.item_number)
        if product is None:
            await _end(
                ctx,
                session,
                entry,
                failed_with(entry, "product_not_found", "the product was deleted"),
                notifies=notifies,
            )
            return True
        if product.last_applied_seq > entry.seq:
            await _end(ctx, session, entry, superseded(entry), notifies=notifies)
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
    result = await apply_plan(
        ctx, session, entry, product, blob_ids, planned, stored, downloaded, revalidated
    )
    await _end(ctx, session, entry, result, notifies=notifies)
    log.info("sync.product.applied", item_number=entry.item_number, **result.counts.model_dump())
    return True


async def _end(
    ctx: SyncContext,
    session: AsyncSession,
    entry: SyncJobProduct,
    result: ProductResult,
    *,
    notifies: bool | None = None,
) -> None:
    """End the entry with `result` in the caller's transaction, and announce it to the
    account's webhooks (a failure, the job's end). `notifies`: whether its job announces
    its end, where the caller knows it (else read)."""
    finish(entry, result)
    metrics.count_ended(session, [entry])
    await events.product_ended(session, ctx.queue, entry, notifies=notifies)


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
