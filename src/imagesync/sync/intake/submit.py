"""Submitting a sync: validate the request, record the job, apply at once what needs no
download and queue the rest, all in the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.catalog.models import Account
from imagesync.fetch.errors import FetchError
from imagesync.fetch.guard import check_url
from imagesync.kit.db import utcnow
from imagesync.kit.errors import Problem, ValidationFailed, duplicate_problems
from imagesync.queue import Job
from imagesync.sync import repository
from imagesync.sync.core.planner import Identity
from imagesync.sync.models import SyncJob, SyncJobProduct
from imagesync.sync.results import failed_with, finish
from imagesync.sync.run.apply import apply_plan, plan_products, spec_of
from imagesync.sync.run.context import SyncContext
from imagesync.sync.run.download import reuse
from imagesync.sync.schemas import ImageSyncRequest, ProductImagesIn

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
            identity = spec_of(image).identity
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
) -> SyncJob:
    """Record the job in the caller's transaction; apply at once, in that same
    transaction, each product whose new list needs no download and no earlier sync of
    which is pending (the nightly re-send), and queue the others. The job and what was
    applied commit together, or nothing does."""
    validate_request(
        request, max_images=max_images, allow=ctx.fetcher.allow, ports=ctx.fetcher.limits.ports
    )
    await repository.lock_submissions(session, account.id)
    now = utcnow()  # taken under the lock: created_at orders jobs as seq orders products
    job = SyncJob(id=uuid.uuid4().hex, account_id=account.id, created_at=now, products=[])
    session.add(job)
    for position, product in enumerate(request.items):
        job.products.append(
            SyncJobProduct(
                account_id=account.id,
                position=position,
                item_number=product.item_number,
                status="queued",
                request=product.model_dump(mode="json"),
            )
        )
    await session.flush()
    await _apply_quick(ctx, session, job, request.items)
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


async def _apply_quick(
    ctx: SyncContext, session: AsyncSession, job: SyncJob, items: Sequence[ProductImagesIn]
) -> None:
    """Apply the products of a new job that need no download, reading the state of all
    of them in a few queries. Under the account's submission lock no newer sync of them
    exists, and one still pending (seen before their images are read) keeps a product
    queued, behind it."""
    entries = job.products
    numbers = [entry.item_number for entry in entries]
    products = await repository.products_by_item(session, job.account_id, numbers)
    pending = await repository.items_with_unfinished(
        session, job.account_id, numbers, other_than=job.id
    )
    candidates = []
    for entry, item in zip(entries, items, strict=True):
        product = products.get(entry.item_number)
        if product is None:
            finish(
                entry,
                failed_with(
                    entry, "product_not_found", f"the account has no product {entry.item_number!r}"
                ),
            )
        elif entry.item_number not in pending:
            specs = [spec_of(image) for image in item.images]
            candidates.append((entry, (product, specs, item.use_sort_b2c)))
    if not candidates:
        return
    plans = await plan_products(session, [wanted for _, wanted in candidates])
    digests = {
        c.spec.identity.digest for _, planned in plans.values() for c in planned.plan.creates
    }
    stored = await reuse(session, job.account_id, digests)  # a product missing one is queued
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
    for entry, product in ready:
        if product.id not in taken:
            # Not newer than what was applied (the queue finds it superseded), or changed
            # since it was planned (the queue plans it again).
            continue
        blob_ids, planned = plans[product.id]
        result = await apply_plan(ctx, session, entry, product, blob_ids, planned, stored, 0)
        finish(entry, result)
