"""All SQL of image sync. Every query on account data is scoped by `account_id`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Executable,
    Integer,
    String,
    Table,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from imagesync.catalog.models import (
    Attribute,
    AttributeValue,
    Product,
    Variant,
    VariantAttribute,
)
from imagesync.kit.db import UTCDateTime, insert_or_skip
from imagesync.storage.models import Blob, Rendition
from imagesync.storage.repository import BLOBS
from imagesync.sync.core.planner import (
    ImageSpec,
    StoredImage,
    VariantCodes,
    metadata,
)
from imagesync.sync.models import (
    UNFINISHED,
    IdempotencyKey,
    Image,
    ImageVariant,
    Source,
    SyncJob,
    SyncJobProduct,
    Webhook,
)

# PostgreSQL advisory lock space of an account's submissions: (SUBMISSIONS, account id).
SUBMISSIONS = 7411


def _record_job(dialect: str) -> Executable:
    job = cast(Table, SyncJob.__table__)
    account_id = bindparam("account_id", type_=Integer)
    notify = (
        exists()
        .where(Webhook.account_id == account_id, Webhook.disabled_at.is_(None))
        .label("notify")
    )
    values: list[Any] = [bindparam("id", type_=String), account_id, notify]
    if dialect == "postgresql":
        held = select(
            func.pg_advisory_xact_lock(SUBMISSIONS, bindparam("account_id")).label("held")
        )
        now: Any = func.clock_timestamp()
        select_values = select(*values, type_coerce(now, UTCDateTime)).select_from(held.subquery())
    else:
        # SQLAlchemy's own text form of a datetime on SQLite, to the microsecond.
        now = func.strftime("%Y-%m-%d %H:%M:%f", "now").concat("000")
        select_values = select(*values, type_coerce(now, UTCDateTime))
    return (
        insert(job)
        .from_select(["id", "account_id", "notify", "created_at"], select_values)
        .returning(job.c.created_at, job.c.notify)
    )


# The hot path's statements, built once (per dialect) so that each call only binds.
RECORD_JOB = {dialect: _record_job(dialect) for dialect in ("postgresql", "sqlite")}


async def record_job(session: AsyncSession, job_id: str, account_id: int) -> tuple[datetime, bool]:
    """Insert the job, holding the account's submissions until this transaction ends, so
    that what the submission reads next is not changed by another one meanwhile; its
    `created_at`, taken by the database once the hold is had, so that the jobs'
    `created_at` and their products' `seq` (the order that wins) agree, and whether it
    announces its end (its account has an enabled webhook). PostgreSQL: a
    transaction-level advisory lock per account, taken by the INSERT itself; SQLite: its
    one write lock, which the INSERT takes before it reads the clock."""
    stmt = RECORD_JOB[session.get_bind().dialect.name]
    result = await session.execute(stmt, {"id": job_id, "account_id": account_id})
    created_at, notify = result.one()
    return created_at, bool(notify)


@dataclass(frozen=True)
class ProductState:
    """A product as a submission finds it: its images, and whether an earlier sync of it
    is still to finish."""

    id: int
    use_sort_b2c: bool
    pending: bool
    images: list[StoredImage]


def _product_states() -> Executable:
    product, image, entry = Product.__table__, Image.__table__, SyncJobProduct.__table__
    pending = (
        exists()
        .where(
            entry.c.account_id == product.c.account_id,
            entry.c.item_number == product.c.item_number,
            UNFINISHED,  # as the partial index says it
        )
        .label("pending")
    )
    links = (
        select(func.count())
        .select_from(ImageVariant.__table__)
        .where(ImageVariant.__table__.c.image_id == image.c.id)
        .scalar_subquery()
        .label("links")
    )
    return (
        select(
            product.c.id,
            product.c.item_number,
            product.c.use_sort_b2c,
            pending,
            image.c.id.label("image_id"),
            image.c.url,
            image.c.sort,
            image.c.sort_b2c,
            image.c.existance_key,
            image.c.alt,
            image.c.custom_filename,
            image.c.attach_rule,
            links,
        )
        .select_from(product.outerjoin(image, image.c.product_id == product.c.id))
        .where(
            product.c.account_id == bindparam("account_id"),
            product.c.item_number.in_(bindparam("items", expanding=True)),
        )
        .order_by(product.c.id, image.c.sort, image.c.created_at, image.c.id)
    )


PRODUCT_STATES = _product_states()


async def product_states(
    session: AsyncSession, account_id: int, item_numbers: Collection[str]
) -> dict[str, ProductState]:
    """These products' images, and which have an unfinished sync, in one read."""
    rows = await session.execute(
        PRODUCT_STATES, {"account_id": account_id, "items": sorted(item_numbers)}
    )
    states: dict[str, ProductState] = {}
    for (
        product_id,
        item_number,
        use_sort_b2c,
        pending,
        image_id,
        url,
        sort,
        sort_b2c,
        existance_key,
        alt,
        filename,
        rule,
        links,
    ) in rows.all():
        state = states.get(item_number)
        if state is None:
            state = states[item_number] = ProductState(product_id, use_sort_b2c, bool(pending), [])
        if image_id is not None:
            state.images.append(
                StoredImage(
                    image_id,
                    metadata(url, sort, sort_b2c, existance_key, alt, filename, rule),
                    links,
                )
            )
    return states


def stored_spec(row: Any) -> ImageSpec:
    """An image row's spec: what a request would send to keep it as it is."""
    return ImageSpec(
        url=row.url,
        sort=row.sort,
        sort_b2c=row.sort_b2c,
        existance_key=row.existance_key,
        alt=row.alt,
        filename=row.custom_filename,
        attach_rule=dict(row.attach_rule) if row.attach_rule else None,
    )


ENTRIES = cast(Table, SyncJobProduct.__table__)
ADD_ENTRIES = insert(ENTRIES).returning(ENTRIES.c.position, ENTRIES.c.seq)


async def add_entries(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> dict[int, int]:
    """Insert a job's entries, in one statement; their `seq` by position."""
    result = await session.execute(ADD_ENTRIES, list(rows))
    return {row.position: row.seq for row in result}


async def finish_entries(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Write these entries' ends (`seq`, `status`, `result`, `finished_at`), one
    statement for all."""
    if rows:
        await session.execute(update(SyncJobProduct), list(rows))


async def get_product(session: AsyncSession, account_id: int, item_number: str) -> Product | None:
    stmt = select(Product).where(
        Product.account_id == account_id, Product.item_number == item_number
    )
    return await session.scalar(stmt.execution_options(populate_existing=True))


PRODUCTS = cast(Table, Product.__table__)
# What a product's run needs of the product, as a plain row (built once).
PRODUCT_FOR_RUN = select(
    PRODUCTS.c.id,
    PRODUCTS.c.account_id,
    PRODUCTS.c.use_sort_b2c,
    PRODUCTS.c.last_applied_seq,
    PRODUCTS.c.images_version,
).where(
    PRODUCTS.c.account_id == bindparam("account"),
    PRODUCTS.c.item_number == bindparam("item"),
)
SET_USE_SORT_B2C = (
    update(PRODUCTS)
    .where(PRODUCTS.c.id == bindparam("product"))
    .values(use_sort_b2c=bindparam("value"))
)


async def product_for_run(session: AsyncSession, account_id: int, item_number: str) -> Any | None:
    """The product as it is now, as a run reads it: a plain row of its `id`,
    `account_id`, `use_sort_b2c`, `last_applied_seq` and `images_version`."""
    result = await session.execute(PRODUCT_FOR_RUN, {"account": account_id, "item": item_number})
    return result.one_or_none()


async def set_use_sort_b2c(session: AsyncSession, product_id: int, value: bool) -> None:
    await session.execute(SET_USE_SORT_B2C, {"product": product_id, "value": value})


TAKE_PRODUCT = (
    update(PRODUCTS)
    .where(
        PRODUCTS.c.id == bindparam("product"),
        PRODUCTS.c.last_applied_seq < bindparam("newer"),
        PRODUCTS.c.images_version == bindparam("version"),
    )
    .values(last_applied_seq=bindparam("newer"), images_version=PRODUCTS.c.images_version + 1)
)


async def take_product_for_seq(
    session: AsyncSession, product_id: int, seq: int, *, version: int
) -> bool:
    """Mark `seq` as the product's newest applied sync, if no newer one was applied and
    its images are still at `version` (what the sync planned from); the version moves on.

    The UPDATE holds the product's row (and on SQLite the write lock) until commit, so
    appliers of one product go one at a time, and an older sync that arrives after a
    newer one finds nothing to update.
    """
    result: CursorResult[tuple[()]] = await session.execute(  # type: ignore[assignment]
        TAKE_PRODUCT, {"product": product_id, "newer": seq, "version": version}
    )
    return result.rowcount == 1


async def bump_images_version(
    session: AsyncSession, *, product_ids: Collection[int] = (), account_id: int | None = None
) -> None:
    """These products' (or all the account's) images or variants may have changed: a run
    planned before re-plans at apply."""
    # updated_at stays: the product itself did not change (its column would stamp it).
    stmt = update(Product).values(
        images_version=Product.images_version + 1, updated_at=Product.updated_at
    )
    if account_id is not None:
        stmt = stmt.where(Product.account_id == account_id)
    else:
        stmt = stmt.where(Product.id.in_(sorted(product_ids)))
    await session.execute(stmt.execution_options(synchronize_session=False))


async def take_products_for_seqs(
    session: AsyncSession, seqs: dict[int, int], versions: dict[int, int]
) -> set[int]:
    """`take_product_for_seq` for several products at once (product id -> seq, and the
    images version each was planned at), in one statement; the ids taken."""
    if not seqs:
        return set()
    newer = case(seqs, value=Product.id)
    planned_at = case(versions, value=Product.id)
    stmt = (
        update(Product)
        .where(
            Product.id.in_(sorted(seqs)),
            Product.last_applied_seq < newer,
            Product.images_version == planned_at,
        )
        .values(last_applied_seq=newer, images_version=Product.images_version + 1)
        .returning(Product.id)
        .execution_options(synchronize_session=False)
    )
    return set((await session.scalars(stmt)).all())


async def product_images(session: AsyncSession, product_ids: Collection[int]) -> Sequence[Image]:
    """These products' images as they are now, with their variant links and blobs."""
    if not product_ids:
        return []
    stmt = (
        select(Image)
        .where(Image.product_id.in_(sorted(product_ids)))
        .options(selectinload(Image.blob), selectinload(Image.variant_links))
        .order_by(Image.sort, Image.created_at, Image.id)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(stmt)).all()


IMAGES = cast(Table, Image.__table__)
IMAGE_LINKS = cast(Table, ImageVariant.__table__)
# A plan's reads, built once: a product's images as plain rows, their variant links,
# and its variants' attribute codes.
IMAGE_ROWS = (
    select(
        IMAGES.c.id,
        IMAGES.c.product_id,
        IMAGES.c.blob_id,
        IMAGES.c.url,
        IMAGES.c.sort,
        IMAGES.c.sort_b2c,
        IMAGES.c.existance_key,
        IMAGES.c.alt,
        IMAGES.c.custom_filename,
        IMAGES.c.attach_rule,
    )
    .where(IMAGES.c.product_id.in_(bindparam("products", expanding=True)))
    .order_by(IMAGES.c.sort, IMAGES.c.created_at, IMAGES.c.id)
)
IMAGE_LINK_ROWS = (
    select(IMAGE_LINKS.c.image_id, IMAGE_LINKS.c.variant_id)
    .join(IMAGES, IMAGES.c.id == IMAGE_LINKS.c.image_id)
    .where(IMAGES.c.product_id.in_(bindparam("products", expanding=True)))
)


ADD_IMAGES = insert(IMAGES)
ADD_IMAGE_LINKS = insert(IMAGE_LINKS)


async def add_images(
    session: AsyncSession, images: Sequence[dict[str, Any]], links: Sequence[dict[str, Any]]
) -> None:
    """Insert these image rows, then their variant links: one statement each."""
    if images:
        await session.execute(ADD_IMAGES, list(images))
    if links:
        await session.execute(ADD_IMAGE_LINKS, list(links))


async def image_rows(session: AsyncSession, product_ids: Collection[int]) -> Sequence[Any]:
    """These products' images as plain rows, in sort order."""
    if not product_ids:
        return []
    return (await session.execute(IMAGE_ROWS, {"products": sorted(product_ids)})).all()


async def image_links(session: AsyncSession, product_ids: Collection[int]) -> dict[str, set[int]]:
    """The variants each image of these products is attached to, by image id."""
    if not product_ids:
        return {}
    links: dict[str, set[int]] = defaultdict(set)
    for image_id, variant_id in await session.execute(
        IMAGE_LINK_ROWS, {"products": sorted(product_ids)}
    ):
        links[image_id].add(variant_id)
    return links


async def images_by_id(session: AsyncSession, image_ids: Collection[str]) -> Sequence[Image]:
    """These images, to change them, with their variant links and blobs."""
    if not image_ids:
        return []
    stmt = (
        select(Image)
        .where(Image.id.in_(sorted(image_ids)))
        .options(selectinload(Image.blob), selectinload(Image.variant_links))
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(stmt)).all()


async def products_by_item(
    session: AsyncSession, account_id: int, item_numbers: Collection[str]
) -> dict[str, Product]:
    stmt = select(Product).where(
        Product.account_id == account_id, Product.item_number.in_(sorted(item_numbers))
    )
    found = await session.scalars(stmt.execution_options(populate_existing=True))
    return {p.item_number: p for p in found.all()}


async def items_with_unfinished(
    session: AsyncSession, account_id: int, item_numbers: Collection[str], *, other_than: str
) -> set[str]:
    """Which of these products have a sync not finished yet, in a job other than
    `other_than`."""
    stmt = (
        select(SyncJobProduct.item_number)
        .where(
            SyncJobProduct.account_id == account_id,
            SyncJobProduct.item_number.in_(sorted(item_numbers)),
            SyncJobProduct.status.in_(("queued", "running")),
            SyncJobProduct.job_id != other_than,
        )
        .distinct()
    )
    return set((await session.scalars(stmt)).all())


VARIANTS = cast(Table, Variant.__table__)
VARIANT_ATTRIBUTES = cast(Table, VariantAttribute.__table__)
ATTRIBUTE_VALUES = cast(Table, AttributeValue.__table__)
ATTRIBUTES = cast(Table, Attribute.__table__)
VARIANT_CODES = (
    select(VARIANTS.c.product_id, VARIANTS.c.id, ATTRIBUTES.c.name, ATTRIBUTE_VALUES.c.code)
    .outerjoin(VARIANT_ATTRIBUTES, VARIANT_ATTRIBUTES.c.variant_id == VARIANTS.c.id)
    .outerjoin(ATTRIBUTE_VALUES, ATTRIBUTE_VALUES.c.id == VARIANT_ATTRIBUTES.c.attribute_value_id)
    .outerjoin(ATTRIBUTES, ATTRIBUTES.c.id == VARIANT_ATTRIBUTES.c.attribute_id)
    .where(VARIANTS.c.product_id.in_(bindparam("products", expanding=True)))
    .order_by(VARIANTS.c.id)
)


async def variant_codes(
    session: AsyncSession, product_ids: Collection[int]
) -> dict[int, list[VariantCodes]]:
    """Each product's variants with their attribute codes by attribute name."""
    if not product_ids:
        return {}
    rows = await session.execute(VARIANT_CODES, {"products": sorted(product_ids)})
    codes: dict[int, dict[int, dict[str, str | None]]] = defaultdict(dict)
    for product_id, variant_id, name, code in rows:
        variant = codes[product_id].setdefault(variant_id, {})
        if name is not None:
            variant[name] = code
    return {
        pid: [VariantCodes(vid, c) for vid, c in variants.items()]
        for pid, variants in codes.items()
    }


async def variant_skus(session: AsyncSession, variant_ids: Collection[int]) -> dict[int, str]:
    if not variant_ids:
        return {}
    rows = await session.execute(select(Variant.id, Variant.sku).where(Variant.id.in_(variant_ids)))
    return {row.id: row.sku for row in rows}


SOURCES = cast(Table, Source.__table__)
ADD_SOURCES = insert_or_skip(SOURCES, ["account_id", "identity_hash"])


async def add_sources(session: AsyncSession, rows: Sequence[dict[str, object]]) -> None:
    """Insert these sources; one the account has already (recorded at once by another
    worker) is left out, not an error."""
    if rows:
        await session.execute(ADD_SOURCES[session.get_bind().dialect.name], list(rows))


async def update_sources(session: AsyncSession, rows: Sequence[dict[str, object]]) -> None:
    """Update sources by their `id`: a refresh's new bytes, or the validators sent again."""
    if rows:
        await session.execute(update(Source), list(rows))


# What a run needs of each known identity, in one plain read (built once).
FIND_SOURCES = (
    select(
        SOURCES.c.identity_hash,
        SOURCES.c.id,
        SOURCES.c.etag,
        SOURCES.c.last_modified,
        BLOBS.c.id.label("blob_id"),
        BLOBS.c.content_type,
        BLOBS.c.width,
        BLOBS.c.sha256,
    )
    .join(BLOBS, BLOBS.c.id == SOURCES.c.blob_id)
    .where(
        SOURCES.c.account_id == bindparam("account_id"),
        SOURCES.c.identity_hash.in_(bindparam("hashes", expanding=True)),
        BLOBS.c.collecting_since.is_(None),  # being deleted: as good as unknown
    )
)


async def find_sources(
    session: AsyncSession, account_id: int, identity_hashes: Collection[str]
) -> dict[str, Any]:
    """The account's sources of these identity digests, with their blobs, by digest: plain
    rows of the source's `id`, `etag` and `last_modified` and the blob's `blob_id`,
    `content_type`, `width` and `sha256`. A blob being collected is as good as unknown."""
    if not identity_hashes:
        return {}
    rows = await session.execute(
        FIND_SOURCES, {"account_id": account_id, "hashes": list(identity_hashes)}
    )
    return {row.identity_hash: row for row in rows}


IMAGE_FILE = (
    select(Image.filename, Blob.storage_key, Blob.content_type, Blob.sha256)
    .join(Blob, Blob.id == Image.blob_id)
    .where(Image.id == bindparam("image_id"))
)
RENDITION_FILE = (
    select(Image.filename, Blob.sha256, Rendition.storage_key)
    .join(Blob, Blob.id == Image.blob_id)
    .join(Rendition, Rendition.blob_id == Blob.id)
    .where(
        Image.id == bindparam("image_id"),
        Rendition.width == bindparam("width"),
        Rendition.state == "ready",
        Rendition.storage_key.is_not(None),
    )
)


async def image_file(session: AsyncSession, image_id: str) -> Any | None:
    """What the file route needs of an image: its filename and its blob's key, type and
    sha256, in one plain read (it answers every GET of a file; built once)."""
    return (await session.execute(IMAGE_FILE, {"image_id": image_id})).one_or_none()


async def rendition_file(session: AsyncSession, image_id: str, width: int) -> Any | None:
    """What the rendition route needs: the image's filename, its blob's sha256 and the
    key of its ready rendition `width` px wide, in one plain read (built once)."""
    params = {"image_id": image_id, "width": width}
    return (await session.execute(RENDITION_FILE, params)).one_or_none()


@dataclass(frozen=True, slots=True)
class JobRows:
    """A job as it is read to be shown (`results.job_read`): its id, when it was
    recorded, and its products as plain rows of `item_number`, `status`, `result` and
    `finished_at`, in the order they were sent."""

    id: str
    created_at: datetime
    products: Sequence[Any]


_JOBS = cast(Table, SyncJob.__table__)
# The job and its products, in one plain read: every poll of a job reads it (built once).
JOB_ROWS = (
    select(
        _JOBS.c.created_at,
        ENTRIES.c.item_number,
        ENTRIES.c.status,
        ENTRIES.c.result,
        ENTRIES.c.finished_at,
    )
    .select_from(_JOBS.outerjoin(ENTRIES, ENTRIES.c.job_id == _JOBS.c.id))
    .where(_JOBS.c.id == bindparam("job"), _JOBS.c.account_id == bindparam("account"))
    .order_by(ENTRIES.c.position)
)


async def get_job(session: AsyncSession, account_id: int, job_id: str) -> JobRows | None:
    """The account's job `job_id`, as plain rows; None if it has none such."""
    rows = (await session.execute(JOB_ROWS, {"job": job_id, "account": account_id})).all()
    if not rows:
        return None
    products = [row for row in rows if row.item_number is not None]
    return JobRows(job_id, rows[0].created_at, products)


async def get_job_any(session: AsyncSession, job_id: str) -> SyncJob:
    """A job whatever its account (workers and tests; never reachable from a route)."""
    stmt = select(SyncJob).where(SyncJob.id == job_id).options(selectinload(SyncJob.products))
    job = await session.scalar(stmt)
    assert job is not None, job_id
    return job


async def get_entry(session: AsyncSession, seq: int) -> SyncJobProduct | None:
    return await session.get(SyncJobProduct, seq, populate_existing=True)


# PostgreSQL advisory lock space of an account's claims: (CLAIMS, account id).
CLAIMS = 7413


@dataclass(frozen=True)
class Claimed:
    """What a run needs of the entry it took."""

    job_id: str
    account_id: int
    item_number: str
    request: dict[str, Any]
    notifies: bool  # whether its job announces its end (`SyncJob.notify`, set once)


# The account's claims, one at a time on PostgreSQL (built once, as the two below).
CLAIM_LOCK = select(func.pg_advisory_xact_lock(CLAIMS, ENTRIES.c.account_id)).where(
    ENTRIES.c.seq == bindparam("claimed")
)
_OTHER = ENTRIES.alias("other")
CLAIM_ENTRY = (
    update(ENTRIES)
    .where(
        ENTRIES.c.seq == bindparam("claimed"),
        ENTRIES.c.status.in_(("queued", "running")),
        select(func.count())
        .where(
            _OTHER.c.account_id == ENTRIES.c.account_id,
            _OTHER.c.status == "running",
            _OTHER.c.seq != ENTRIES.c.seq,
        )
        .scalar_subquery()
        < bindparam("account_max"),
    )
    .values(status="running")
    .returning(
        ENTRIES.c.job_id,
        ENTRIES.c.account_id,
        ENTRIES.c.item_number,
        ENTRIES.c.request,
        select(SyncJob.notify).where(SyncJob.id == ENTRIES.c.job_id).scalar_subquery(),
    )
)


async def claim_entry(session: AsyncSession, seq: int, *, account_max: int) -> Claimed | None:
    """Take one entry, and what its run needs of it; None when it is finished already, or
    when its account has `account_max` products running (so that no account holds every
    worker). A `running` entry is taken again: the queue runs a product's job once at a
    time, so that is a run cut off by a crash.

    The account's claims go one at a time, so that the count is exact: on PostgreSQL a
    transaction-level advisory lock per account (claims that ran side by side each
    counted the others' as not yet running), on SQLite its one writer."""
    params = {"claimed": seq, "account_max": account_max}
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(CLAIM_LOCK, params)
    row = (await session.execute(CLAIM_ENTRY, params)).one_or_none()
    if row is None:
        return None
    job_id, account_id, item_number, request, notifies = row
    return Claimed(job_id, account_id, item_number, request, bool(notifies))


async def products_with_rules(session: AsyncSession, account_id: int) -> Sequence[int]:
    stmt = (
        select(Image.product_id)
        .join(Product, Product.id == Image.product_id)
        .where(Product.account_id == account_id, Image.attach_rule.is_not(None))
        .distinct()
    )
    return (await session.scalars(stmt)).all()


async def images_of_products(
    session: AsyncSession, product_ids: Collection[int]
) -> Sequence[Image]:
    if not product_ids:
        return []
    stmt = (
        select(Image)
        .where(Image.product_id.in_(product_ids))
        .options(selectinload(Image.variant_links), selectinload(Image.blob))
        .order_by(Image.sort, Image.created_at, Image.id)
    )
    return (await session.scalars(stmt)).all()


async def images_page(
    session: AsyncSession, product_id: int, *, b2c: bool, offset: int, limit: int | None
) -> tuple[int, Sequence[Image]]:
    """A page of a product's images, in sort order (or B2C order: `sort_b2c`, those
    without one last), and how many it has."""
    total = await session.scalar(select(func.count()).where(Image.product_id == product_id))
    order = (
        (Image.sort_b2c.is_(None), Image.sort_b2c, Image.sort, Image.created_at, Image.id)
        if b2c
        else (Image.sort, Image.created_at, Image.id)
    )
    stmt = (
        select(Image)
        .where(Image.product_id == product_id)
        .options(selectinload(Image.variant_links), selectinload(Image.blob))
        .order_by(*order)
        .offset(offset)
        .limit(limit)
    )
    return int(total or 0), (await session.scalars(stmt)).all()


async def add_idempotency_key(
    session: AsyncSession,
    account_id: int,
    key: str,
    digest: str,
    job_id: str,
    now: datetime,
) -> bool:
    """Insert the key; False when the account has it already. On PostgreSQL, a key
    another transaction is inserting waits for that transaction to end."""
    insert_ = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = (
        insert_(IdempotencyKey)
        .values(
            account_id=account_id, key=key, request_digest=digest, job_id=job_id, created_at=now
        )
        .on_conflict_do_nothing(index_elements=["account_id", "key"])
        .returning(IdempotencyKey.key)
    )
    return (await session.execute(stmt)).first() is not None


async def get_idempotency_key(
    session: AsyncSession, account_id: int, key: str
) -> IdempotencyKey | None:
    return await session.get(IdempotencyKey, (account_id, key), populate_existing=True)


async def renew_idempotency_key(
    session: AsyncSession, account_id: int, key: str, digest: str, job_id: str, now: datetime
) -> None:
    await session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.account_id == account_id, IdempotencyKey.key == key)
        .values(request_digest=digest, job_id=job_id, created_at=now)
        .execution_options(synchronize_session=False)
    )


async def delete_idempotency_keys(session: AsyncSession, *, before: datetime) -> int:
    result: CursorResult[tuple[()]] = await session.execute(  # type: ignore[assignment]
        delete(IdempotencyKey).where(IdempotencyKey.created_at < before)
    )
    return result.rowcount
