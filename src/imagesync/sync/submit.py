"""Submitting a sync: validate the request, record the job and queue its products, in
the caller's transaction."""

from __future__ import annotations

import uuid
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.catalog.models import Account
from imagesync.kit.db import utcnow
from imagesync.kit.errors import Problem, ValidationFailed, duplicate_problems
from imagesync.queue import SYNC, Queue
from imagesync.sync import repository
from imagesync.sync.models import SyncJob, SyncJobProduct
from imagesync.sync.planner import Identity, ImageSpec
from imagesync.sync.schemas import ImageIn, ImageSyncRequest

log = structlog.get_logger(__name__)

RUN_PRODUCT = "sync.run_product"
# An inline apply takes milliseconds; if its process dies, the queue takes over soon.
INLINE_LEASE = timedelta(seconds=30)


def validate_request(request: ImageSyncRequest, *, max_images: int) -> None:
    """The checks that span fields; the schema did the rest."""
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
    if problems:
        raise ValidationFailed(problems=problems)


def product_lock(account_id: int, item_number: str) -> str:
    """Syncs of one product run one at a time, in submission order."""
    return f"product:{account_id}:{item_number}"


async def submit(
    session: AsyncSession,
    account: Account,
    request: ImageSyncRequest,
    *,
    max_images: int,
    queue: Queue,
    runner: str | None = None,
) -> SyncJob:
    """Record the job and queue its products, in the caller's transaction. The products
    are held for the request itself for a moment (see `run_inline`): a queue runner that
    wakes at the commit leaves them alone until the request has applied them or handed
    them back."""
    validate_request(request, max_images=max_images)
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
                status="running",
                attempts=1,
                lease_expires_at=now + INLINE_LEASE,
                runner=runner,
                request=product.model_dump(mode="json"),
            )
        )
    await session.flush()
    for entry in job.products:
        await queue.defer(
            session,
            RUN_PRODUCT,
            {"seq": entry.seq},
            queue=SYNC,
            lock=product_lock(account.id, entry.item_number),
        )
    log.info("sync.job.submitted", account=account.name, job=job.id, products=len(job.products))
    return job


def spec_of(image: ImageIn) -> ImageSpec:
    rule = image.attach_to_variants_matching_attribute_code
    return ImageSpec(
        url=image.url,
        sort=image.sort,
        sort_b2c=image.sort_b2c,
        existance_key=image.existance_key,
        alt=image.alt,
        filename=image.filename,
        attach_rule=dict(rule) if rule else None,
        skip_if_no_variant_matches=image.skip_if_no_variant_matches_attribute_code,
    )
