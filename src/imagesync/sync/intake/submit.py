"""Submitting a sync: validate the request, record the job, apply at once what needs no
download and queue the rest, all in the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.catalog.models import Account
from imagesync.fetch.errors import FetchError
from imagesync.fetch.guard import check_url
from imagesync.kit.errors import Problem, ValidationFailed, duplicate_problems
from imagesync.queue import Job
from imagesync.sync import metrics, repository
from imagesync.sync.core.planner import Identity, ImageSpec, identity_of, unchanged
from imagesync.sync.repository import ProductState
from imagesync.sync.results import (
    Submitted,
    SubmittedJob,
    failed_with,
    finish,
    kept,
    record_kept,
)
from imagesync.sync.run.apply import apply_plan, plan_products, spec_of
from imagesync.sync.run.context import SyncContext
from imagesync.sync.run.download import reuse
from imagesync.sync.schemas import ImageSyncRequest
from imagesync.sync.webhooks import events

log = structlog.get_logger(__name__)

RUN_PRODUCT = "sync.run_product"


def validate_request(
    request: ImageSyncRequest,
    *,
    max_images: int,
    allow: frozenset[tuple[str, int]] = frozenset(),
    ports: frozenset[int] = frozenset({80, 443}),
) -> None:
    """The checks that span fields or need the settings: the ports fetched from and the
    exact `host:port` pairs allowed decide whether a URL's port or literal address is
    refused (`port_refused`, `address_refused`), which needs no network. A host name's
    addresses, and redirects, are judged in the job. The schema did the rest."""
    key = request.key
    problems = duplicate_problems(
        (p.item_number, f"/{key}/{i}/item_number") for i, p in enumerate(request.items)
    )
    for i, product in enumerate(request.items):
        if len(product.images) > max_images:
            problems.append(
                Problem(
                    detail=f"{len(product.images)} images; at most {max_images} per product",
                    pointer=f"/{key}/{i}/images",
                    code="too_many_images",
                    title="Too many images",
                )
            )
        identities: dict[Identity, int] = {}
        for j, image in enumerate(product.images):
            identity = identity_of(image.url, image.existance_key)
            if identity in identities:
                field = "existance_key" if identity.kind == "existance_key" else "url"
                problems.append(
                    Problem(
                        detail=f"the same {field} as image {identities[identity]}: each image of a "
                        "product needs its own identity",
                        pointer=f"/{key}/{i}/images/{j}/{field}",
                        code="duplicate_image",
                        title="Duplicate image",
                    )
                )
            identities.setdefault(identity, j)
            try:  # needs no network: a literal address or a port is refused here
                check_url(image.url, allow=allow, ports=ports)
            except FetchError as refusal:
                problems.append(
                    Problem(
                        detail=refusal.detail,
                        pointer=f"/{key}/{i}/images/{j}/url",
                        code=refusal.code,
                        title="URL not fetched from",
                    )
                )
    if problems:
        raise ValidationFailed(problems=problems)


def product_lock(account_id: int, item_number: str) -> str:
    """Syncs of one product run one at a time, in submission order."""
    return f"product:{account_id}:{item_number}"


async def submit(
    session: AsyncSession,
    ctx: SyncContext,
    account: Account,
    request: ImageSyncRequest,
    *,
    max_images: int,
    job_id: str | None = None,
) -> SubmittedJob:
    """Record the job (`job_id`, else a new id) in the caller's transaction; finish at
    once, in that same transaction, each product whose new list needs no download and no
    earlier sync of which is pending, and queue the others. The job and what was applied commit
    together, or nothing does.

    The nightly re-send, where every product is unchanged, costs three statements: the
    job (which holds the account's submissions), one read of the products' images, and
    the job's entries, each already finished."""
    validate_request(
        request, max_images=max_images, allow=ctx.fetcher.allow, ports=ctx.fetcher.limits.ports
    )
    job_id = job_id or uuid.uuid4().hex
    created_at, notify = await repository.record_job(session, job_id, account.id)
    job = SubmittedJob(job_id, created_at, notify)
    numbers = [product.item_number for product in request.items]
    states = await repository.product_states(session, account.id, numbers)
    to_plan: list[tuple[Submitted, list[ImageSpec], bool | None]] = []
    for position, item in enumerate(request.items):
        entry = Submitted(job_id, account.id, position, item.item_number)
        job.products.append(entry)
        state = states.get(item.item_number)
        specs = [spec_of(image) for image in item.images]
        if state is None:
            detail = f"the account has no product {item.item_number!r}"
            finish(entry, failed_with(entry, "product_not_found", detail))
        elif state.pending:
            continue  # behind the earlier sync, in the queue
        elif any(spec.refresh for spec in specs):
            continue  # a refresh asks origins whether bytes changed: the queue runs it
        elif (ids := _unchanged(state, specs, item.use_sort_b2c)) is not None:
            record_kept(entry, kept(entry, specs, ids))
        else:
            to_plan.append((entry, specs, item.use_sort_b2c))
    for entry, item in zip(job.products, request.items, strict=True):
        if entry.status == "queued":  # what its run reads
            entry.request = item.model_dump(mode="json")
    seqs = await repository.add_entries(session, [entry.row() for entry in job.products])
    for entry in job.products:
        entry.seq = seqs[entry.position]
    applied = await _apply_quick(ctx, session, account.id, to_plan)
    await repository.finish_entries(session, [_end(entry) for entry in applied])
    metrics.count_ended(session, job.products)
    if job.notify:
        await events.job_recorded(session, ctx.queue, account.id, job.id, job.products)
    queued = [entry for entry in job.products if entry.status == "queued"]
    await ctx.queue.defer(
        session,
        RUN_PRODUCT,
        [
            Job(
                {"seq": entry.seq},
                lock=product_lock(account.id, entry.item_number),
                share=f"account:{account.id}",
            )
            for entry in queued
        ],
    )
    log.info(
        "sync.job.submitted",
        account=account.name,
        job=job.id,
        products=len(job.products),
        queued=len(queued),
    )
    return job


def _unchanged(
    state: ProductState, specs: list[ImageSpec], use_sort_b2c: bool | None
) -> list[str] | None:
    if use_sort_b2c is not None and use_sort_b2c != state.use_sort_b2c:
        return None
    return unchanged(state.images, specs)


def _end(entry: Submitted) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "status": entry.status,
        "result": entry.result,
        "finished_at": entry.finished_at,
    }


async def _apply_quick(
    ctx: SyncContext,
    session: AsyncSession,
    account_id: int,
    to_plan: Sequence[tuple[Submitted, list[ImageSpec], bool | None]],
) -> list[Submitted]:
    """Plan the products of a new job that change, and apply those that need no
    download, reading the state of all of them in a few queries; the entries finished.
    Under the account's submission lock no newer sync of them exists, and none was
    pending when they were read."""
    if not to_plan:
        return []
    products = await repository.products_by_item(
        session, account_id, [entry.item_number for entry, _, _ in to_plan]
    )
    candidates = [
        (entry, (product, specs, use_sort_b2c))
        for entry, specs, use_sort_b2c in to_plan
        # One deleted since it was read stays queued: its run finds it gone.
        if (product := products.get(entry.item_number)) is not None
    ]
    plans = await plan_products(session, [wanted for _, wanted in candidates])
    digests = {
        c.spec.identity.digest for _, planned in plans.values() for c in planned.plan.creates
    }
    stored = await reuse(session, account_id, digests)  # a product missing one is queued
    ready = [
        (entry, product)
        for entry, (product, _, _) in candidates
        if all(c.spec.identity.digest in stored for c in plans[product.id][1].plan.creates)
    ]  # the others need a download first: the queue runs them
    taken = await repository.take_products_for_seqs(
        session,
        {product.id: entry.seq for entry, product in ready},
        {product.id: plans[product.id][1].version for _, product in ready},
    )
    applied = []
    for entry, product in ready:
        if product.id not in taken:
            # Changed since it was read (the queue plans it again).
            continue
        blob_ids, planned = plans[product.id]
        result = await apply_plan(ctx, session, entry, product, blob_ids, planned, stored, 0)
        finish(entry, result)
        applied.append(entry)
    return applied
