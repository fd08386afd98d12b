"""Image sync use cases: submit a job, run one product of it, read jobs and images."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.catalog.models import Account, Product
from imagesync.fetch.downloader import Download, SafeFetcher
from imagesync.fetch.errors import FetchError
from imagesync.kit.db import session_scope, utcnow
from imagesync.kit.errors import NotFound, Problem, ValidationFailed, duplicate_problems
from imagesync.media.probe import MediaError, MediaLimits, ProbedImage, probe
from imagesync.media.renditions import DEFAULT_WIDTHS, target_widths
from imagesync.queue import RENDITIONS, SYNC, Queue
from imagesync.storage.blobs import BlobStore, blob_key
from imagesync.sync import repository
from imagesync.sync.models import (
    Blob,
    Image,
    ImageVariant,
    Rendition,
    Source,
    SyncJob,
    SyncJobProduct,
)
from imagesync.sync.planner import (
    CurrentImage,
    Identity,
    ImageSpec,
    ProductPlan,
    matching_variants,
    plan_product_sync,
)
from imagesync.sync.schemas import (
    ImageError,
    ImageIn,
    ImageRead,
    ImageResult,
    ImageSyncRequest,
    JobStatus,
    Outcome,
    ProductImagesIn,
    ProductResult,
    RenditionRead,
    SyncCounts,
    SyncJobRead,
)

log = structlog.get_logger(__name__)


# -- submit -------------------------------------------------------------------------------


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


RUN_PRODUCT = "sync.run_product"
RENDER_BLOB = "media.render_blob"


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


# -- reading jobs -------------------------------------------------------------------------


def job_status(statuses: Sequence[str]) -> JobStatus:
    if any(s in ("queued", "running") for s in statuses):
        return "queued" if all(s == "queued" for s in statuses) else "running"
    failed = sum(s == "failed" for s in statuses)
    if failed == 0:
        return "succeeded"
    return "failed" if failed == len(statuses) else "partially_failed"


def job_read(job: SyncJob) -> SyncJobRead:
    statuses = [entry.status for entry in job.products]
    status = job_status(statuses)
    finished = [e.finished_at for e in job.products if e.finished_at is not None]
    products = [
        ProductResult.model_validate(entry.result)
        if entry.result is not None
        else ProductResult.model_validate(
            {"item_number": entry.item_number, "status": entry.status}
        )
        for entry in job.products
    ]
    return SyncJobRead(
        id=job.id,
        status=status,
        created_at=job.created_at,
        finished_at=max(finished) if status not in ("queued", "running") and finished else None,
        products=products,
    )


async def get_job(session: AsyncSession, account: Account, job_id: str) -> SyncJob:
    job = await repository.get_job(session, account.id, job_id)
    if job is None:
        raise NotFound(f"No image sync job {job_id!r}")
    return job


# -- running one product ------------------------------------------------------------------


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


def current_of(image: Image) -> CurrentImage:
    spec = ImageSpec(
        url=image.url,
        sort=image.sort,
        sort_b2c=image.sort_b2c,
        existance_key=image.existance_key,
        alt=image.alt,
        filename=image.custom_filename,
        attach_rule=dict(image.attach_rule) if image.attach_rule else None,
    )
    return CurrentImage(image.id, spec, frozenset(link.variant_id for link in image.variant_links))


@dataclass(frozen=True)
class Fetched:
    blob_id: int


@dataclass
class SyncContext:
    """What running a product needs; built once per process."""

    sessionmaker: async_sessionmaker[AsyncSession]
    fetcher: SafeFetcher
    store: BlobStore
    queue: Queue
    media: MediaLimits = field(default_factory=MediaLimits)
    rendition_widths: tuple[int, ...] = DEFAULT_WIDTHS
    # Runs of a product that crashed before it ends `failed` / `internal_error`.
    max_attempts: int = 5
    fetches: FetchDeduper = field(default_factory=lambda: FetchDeduper())


class Requeue(Exception):
    """A blob the plan counted on is being collected: plan and download again."""


class ProductBusy(Exception):
    """Another runner holds the product's entry (an API process applying it inline)."""


LEASE = timedelta(minutes=5)
# An inline apply takes milliseconds; if its process dies, the queue takes over soon.
INLINE_LEASE = timedelta(seconds=30)


async def run_inline(ctx: SyncContext, seq: int) -> None:
    """Apply a just-submitted product (held by `submit`) within the request when that is
    quick: its plan needs no download and no earlier sync of it is pending. Otherwise
    hand it to the queue."""
    try:
        await run_entry(ctx, seq, FetchDeduper(), inline=True)
    except Exception as exc:
        await record_crash(ctx, seq, exc, backoff=False)


async def run_queued(ctx: SyncContext, seq: int) -> None:
    """Run one product as a queue's task (procrastinate): take the entry, run it, and
    on an unexpected error count the attempt (see `record_crash`) and raise, so the
    queue runs it again later. Raises `ProductBusy` while another runner holds it."""
    async with session_scope(ctx.sessionmaker) as session:
        now = utcnow()
        if not await repository.claim_entry(session, seq, now, None):
            entry = await repository.get_entry(session, seq)
            if entry is not None and entry.status in ("queued", "running"):
                raise ProductBusy(seq)
            return  # finished already: a retried job finds nothing to do
    try:
        await run_entry(ctx, seq, ctx.fetches)
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
            detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            await _finish(
                session,
                entry,
                _failed_with(
                    entry,
                    "internal_error",
                    f"gave up after {entry.attempts} attempts; the product's images were left "
                    f"as they were ({detail})",
                ),
            )
            return True
        entry.status = "queued"
        entry.lease_expires_at = utcnow() + retry_delay(entry.attempts) if backoff else None
        return False


def retry_delay(attempts: int) -> timedelta:
    """How long a product waits after its `attempts`-th crashed run: 2, 4, 8 s ... 5 min."""
    return timedelta(seconds=min(2**attempts, 300))


async def run_entry(
    ctx: SyncContext, seq: int, fetches: FetchDeduper, *, inline: bool = False
) -> None:
    """Run one product of a job: plan, download what was never seen, then apply the
    whole new image set in one transaction, or change nothing. With `inline`, a product
    that would need a download or wait for an earlier sync goes back to the queue."""
    async with session_scope(ctx.sessionmaker) as session:
        entry = await repository.get_entry(session, seq)
        if entry is None or entry.status != "running":
            return
        payload = ProductImagesIn.model_validate(entry.request)
        specs = [spec_of(image) for image in payload.images]
        product = await repository.get_product(session, entry.account_id, entry.item_number)
        if product is None:
            await _finish(
                session,
                entry,
                _failed_with(
                    entry, "product_not_found", f"the account has no product {entry.item_number!r}"
                ),
            )
            return
        if product.last_applied_seq > seq:
            await _finish(session, entry, _superseded(entry))
            return
        _, plan = await _plan(session, product, specs, payload.use_sort_b2c)
        wanted = [c.spec.identity.digest for c in plan.creates]
        known = await repository.find_sources(session, entry.account_id, wanted)
        # In use from now: the collector leaves them alone while this runs. One it has
        # started on meanwhile is not reused: downloaded again.
        touched = await repository.touch_blobs(
            session, {s.blob_id for s in known.values()}, utcnow()
        )
        known = {key: s for key, s in known.items() if s.blob_id in touched}
        account_id = entry.account_id
        if inline and (
            len(known) < len(plan.creates)
            or await repository.has_unfinished_before(session, account_id, entry.item_number, seq)
        ):
            entry.status = "queued"
            entry.lease_expires_at = None
            entry.attempts -= 1
            return

    # Downloads run outside any transaction; nothing of the product changes here.
    missing = {c.spec.identity: c.spec for c in plan.creates if c.spec.identity.digest not in known}
    outcomes = await asyncio.gather(
        *(
            fetches.fetch(account_id, identity, partial(_download, ctx, account_id, spec))
            for identity, spec in missing.items()
        )
    )
    failures = {
        identity: o
        for identity, o in zip(missing, outcomes, strict=True)
        if isinstance(o, ImageError)
    }
    downloaded = sum(1 for o in outcomes if isinstance(o, Fetched))

    async with session_scope(ctx.sessionmaker) as session:
        entry = await repository.get_entry(session, seq)
        if entry is None or entry.status != "running":
            return
        if failures:
            await _finish(session, entry, _failed(entry, specs, failures, downloaded))
            log.info(
                "sync.product.failed", seq=seq, item_number=entry.item_number, failed=len(failures)
            )
            return
        product = await repository.get_product(session, entry.account_id, entry.item_number)
        if product is None or not await repository.take_product_for_seq(session, product.id, seq):
            result = (
                _superseded(entry)
                if product is not None
                else _failed_with(entry, "product_not_found", "the product was deleted")
            )
            await _finish(session, entry, result)
            return
        try:
            result = await _apply(
                ctx, session, entry, product, specs, payload.use_sort_b2c, downloaded
            )
        except Requeue:
            # Nothing of the product changed; the next run downloads what it needs.
            await session.rollback()
            await _requeue(session, seq)
            log.info("sync.product.requeued", seq=seq, reason="blob being collected")
            return
        await _finish(session, entry, result)
        log.info(
            "sync.product.applied",
            seq=seq,
            item_number=entry.item_number,
            **result.counts.model_dump(),
        )


async def queue_renditions(
    ctx: SyncContext, session: AsyncSession, wanted: Sequence[tuple[int, int]]
) -> int:
    """Add the pending (blob_id, width) renditions that do not exist yet, and queue one
    task per blob that got any; how many blobs."""
    blobs = await repository.ensure_renditions(session, wanted)
    for blob_id in sorted(blobs):
        await ctx.queue.defer(
            session, RENDER_BLOB, {"blob_id": blob_id}, queue=RENDITIONS, lock=f"blob:{blob_id}"
        )
    return len(blobs)


async def _plan(
    session: AsyncSession, product: Product, specs: list[ImageSpec], use_sort_b2c: bool | None
) -> tuple[dict[str, Image], ProductPlan]:
    """The product's current images by id, and the plan from them to `specs`."""
    images = {i.id: i for i in await repository.product_images(session, product.id)}
    variants = (await repository.variant_codes(session, [product.id])).get(product.id, [])
    plan = plan_product_sync(
        [current_of(i) for i in images.values()], specs, variants, use_sort_b2c=use_sort_b2c
    )
    return images, plan


async def _requeue(session: AsyncSession, seq: int) -> None:
    entry = await repository.get_entry(session, seq)
    if entry is not None and entry.status == "running":
        entry.status = "queued"
        entry.lease_expires_at = None
        await session.flush()


async def _apply(
    ctx: SyncContext,
    session: AsyncSession,
    entry: SyncJobProduct,
    product: Product,
    specs: list[ImageSpec],
    use_sort_b2c: bool | None,
    downloaded: int,
) -> ProductResult:
    """Make the product's images exactly the plan's, inside the caller's transaction
    (which already holds the product, see `take_product_for_seq`). Planned again here
    because the images may have changed while this product was downloading."""
    images, plan = await _plan(session, product, specs, use_sort_b2c)
    wanted = {c.spec.identity.digest for c in plan.creates}
    sources = await repository.find_sources(session, entry.account_id, wanted)
    now = utcnow()
    if len(sources) < len(wanted):
        raise Requeue
    linked = {s.blob_id for s in sources.values()}
    if await repository.touch_blobs(session, linked, now) != linked:
        raise Requeue  # the collector took one between the plan and now
    released = {images[i].blob_id for i in plan.deletes}
    await repository.touch_blobs(session, released, now)  # the grace period starts now
    await queue_renditions(
        ctx,
        session,
        [
            (s.blob_id, width)
            for s in sources.values()
            for width in target_widths(s.blob.width, ctx.rendition_widths)
        ],
    )
    results: dict[int, ImageResult] = {}
    counts = SyncCounts(downloaded=downloaded)
    for create in plan.creates:
        source = sources[create.spec.identity.digest]
        image = Image(
            id=uuid.uuid4().hex,
            product_id=product.id,
            source_id=source.id,
            blob_id=source.blob_id,
            created_at=now,
            updated_at=now,
            variant_links=[],
            filename=effective_filename(create.spec, source.blob.content_type),
        )
        _set_metadata(image, create.spec)
        image.variant_links = [ImageVariant(variant_id=v) for v in sorted(create.variant_ids)]
        session.add(image)
        counts.created += 1
        results[create.index] = _image_result(create.spec, "created", image.id)
    for keep in plan.keeps:
        image = images[keep.image_id]
        if keep.changed:
            _set_metadata(image, keep.spec)
            image.filename = effective_filename(keep.spec, image.blob.content_type)
            _relink(image, keep.variant_ids)
            image.updated_at = now
            counts.updated += 1
        else:
            counts.kept += 1
        results[keep.index] = _image_result(
            keep.spec, "updated" if keep.changed else "kept", image.id
        )
    for skip in plan.skips:
        counts.skipped += 1
        results[skip.index] = _image_result(skip.spec, "skipped", None)
    for image_id in plan.deletes:
        await session.delete(images[image_id])
        counts.deleted += 1
    if use_sort_b2c is not None:
        product.use_sort_b2c = use_sort_b2c
    if not plan.is_noop or use_sort_b2c is not None:
        product.updated_at = now
    await session.flush()
    return ProductResult(
        item_number=entry.item_number,
        status="succeeded",
        counts=counts,
        images=[results[i] for i in range(len(specs))],
    )


def _set_metadata(image: Image, spec: ImageSpec) -> None:
    image.url = spec.url
    image.existance_key = spec.existance_key
    image.sort = spec.sort
    image.sort_b2c = spec.sort_b2c
    image.alt = spec.alt
    image.custom_filename = spec.filename
    image.attach_rule = dict(spec.attach_rule) if spec.attach_rule else None


def _relink(image: Image, variant_ids: frozenset[int]) -> bool:
    current = {link.variant_id: link for link in image.variant_links}
    if set(current) == variant_ids:
        return False
    for variant_id, link in current.items():
        if variant_id not in variant_ids:
            image.variant_links.remove(link)
    for variant_id in sorted(variant_ids - set(current)):
        image.variant_links.append(ImageVariant(variant_id=variant_id))
    return True


def _image_result(
    spec: ImageSpec, outcome: Outcome, image_id: str | None, error: ImageError | None = None
) -> ImageResult:
    return ImageResult(
        url=spec.url,
        existance_key=spec.existance_key,
        outcome=outcome,
        image_id=image_id,
        error=error,
    )


def _superseded(entry: SyncJobProduct) -> ProductResult:
    return ProductResult(
        item_number=entry.item_number,
        status="superseded",
        error=ImageError(
            code="superseded", detail="a newer sync of this product was applied first; it wins"
        ),
    )


def _failed_with(entry: SyncJobProduct, code: str, detail: str) -> ProductResult:
    """The product failed as a whole, for one reason."""
    return ProductResult(
        item_number=entry.item_number,
        status="failed",
        error=ImageError(code=code, detail=detail),
    )


def _failed(
    entry: SyncJobProduct,
    specs: list[ImageSpec],
    failures: dict[Identity, ImageError],
    downloaded: int,
) -> ProductResult:
    images = []
    for spec in specs:
        error = failures.get(spec.identity)
        images.append(_image_result(spec, "failed" if error else "not_applied", None, error))
    first = next(iter(failures.values()))
    return ProductResult(
        item_number=entry.item_number,
        status="failed",
        error=ImageError(
            code=first.code,
            detail=f"{len(failures)} image(s) could not be fetched or are not usable images; "
            "the product's images were left as they were",
        ),
        counts=SyncCounts(failed=len(failures), downloaded=downloaded),
        images=images,
    )


async def _finish(session: AsyncSession, entry: SyncJobProduct, result: ProductResult) -> None:
    entry.status = result.status
    entry.result = result.model_dump(mode="json")
    entry.finished_at = utcnow()
    entry.lease_expires_at = None
    await session.flush()


async def _download(ctx: SyncContext, account_id: int, spec: ImageSpec) -> Fetched | ImageError:
    """Fetch, probe and store one identity, then remember it for the account."""
    try:
        download = await ctx.fetcher.fetch(spec.url)
    except FetchError as exc:
        return ImageError(code=exc.code, detail=exc.detail)
    try:
        probed = await asyncio.to_thread(probe, download.path, limits=ctx.media)
        return await _record(ctx, account_id, spec.identity, spec.url, download, probed)
    except MediaError as exc:
        return ImageError(code=exc.code, detail=exc.detail)
    finally:
        download.path.unlink(missing_ok=True)


async def _record(
    ctx: SyncContext,
    account_id: int,
    identity: Identity,
    url: str,
    download: Download,
    probed: ProbedImage,
) -> Fetched | ImageError:
    """Store the bytes (unless a live blob has them already) and record blob and source.

    A blob row exists only once its file is stored, and the collector deletes the file
    before the row, so a row that is not being collected always has its file. Bytes
    whose blob is being collected wait for the collector to finish, then are stored anew.
    """
    key = identity.digest
    for attempt in range(8):  # another worker may record the same blob or identity at once
        try:
            async with session_scope(ctx.sessionmaker) as session:
                blob = await repository.get_blob(session, download.sha256)
                if blob is not None and blob.collecting_since is not None:
                    raise _BeingCollected
                if blob is None:
                    await ctx.store.put_file(blob_key(download.sha256), download.path)
                    blob = Blob(
                        sha256=download.sha256,
                        size=download.size,
                        content_type=probed.content_type,
                        width=probed.width,
                        height=probed.height,
                        storage_key=blob_key(download.sha256),
                    )
                    session.add(blob)
                    await session.flush()
                else:
                    await repository.touch_blobs(session, [blob.id], utcnow())
                known = await repository.find_sources(session, account_id, [key])
                if key not in known:
                    session.add(
                        Source(
                            account_id=account_id,
                            identity_kind=identity.kind,
                            identity=identity.value,
                            identity_hash=key,
                            blob_id=blob.id,
                            url=url,
                        )
                    )
                return Fetched(blob_id=blob.id)
        except IntegrityError:
            await asyncio.sleep(0.05 * attempt)
            continue
        except _BeingCollected:
            await asyncio.sleep(min(0.1 * 2**attempt, 5.0))
    return ImageError(code="store_conflict", detail="could not record the download; retry")


class _BeingCollected(Exception):
    pass


class FetchDeduper:
    """One download per (account, identity) at a time in this process: two products
    sending the same new URL at once share the download."""

    def __init__(self) -> None:
        self._inflight: dict[tuple[int, Identity], asyncio.Future[Fetched | ImageError]] = {}

    async def fetch(
        self,
        account_id: int,
        identity: Identity,
        start: Callable[[], Awaitable[Fetched | ImageError]],
    ) -> Fetched | ImageError:
        key = (account_id, identity)
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(start())
            self._inflight[key] = future
            future.add_done_callback(lambda _f: self._inflight.pop(key, None))
        return await asyncio.shield(future)


# -- names --------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/avif": "avif",
}
_IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".png",
    ".gif",
    ".webp",
    ".avif",
    ".jfif",
    ".bmp",
    ".tif",
    ".tiff",
    ".heic",
    ".svg",
}


def effective_filename(spec: ImageSpec, content_type: str) -> str:
    """The custom filename, else the URL's last path segment; sanitised, with an extension
    that matches the real format."""
    raw = spec.filename or unquote(PurePosixPath(urlsplit(spec.url).path).name)
    name = _UNSAFE.sub("-", raw)
    if PurePosixPath(name).suffix.lower() in _IMAGE_SUFFIXES:
        name = PurePosixPath(name).stem
    name = name.strip(".-")[:150].rstrip(".-") or "image"
    return f"{name}.{_EXTENSIONS.get(content_type, 'bin')}"


# -- variant links and reading images -----------------------------------------------------


async def relink_products(session: AsyncSession, product_ids: Sequence[int]) -> None:
    """Re-evaluate the variant rules of these products' images (variants or codes changed)."""
    images = await repository.images_of_products(session, product_ids)
    variants = await repository.variant_codes(session, product_ids)
    changed = sum(
        _relink(image, matching_variants(image.attach_rule, variants.get(image.product_id, [])))
        for image in images
    )
    if changed:
        await session.flush()
        log.info("sync.images.relinked", products=len(product_ids), images=changed)


async def release_images(session: AsyncSession, product_ids: Sequence[int]) -> None:
    """These products' images are about to be deleted: their blobs' grace period, after
    which the collector deletes what nothing else uses, starts now."""
    images = await repository.images_of_products(session, product_ids)
    await repository.touch_blobs(session, {i.blob_id for i in images}, utcnow())


async def relink_account(session: AsyncSession, account: Account) -> None:
    await relink_products(session, await repository.products_with_rules(session, account.id))


async def list_images(
    session: AsyncSession, account: Account, item_number: str, *, channel: str | None, base_url: str
) -> list[ImageRead]:
    product = await repository.get_product(session, account.id, item_number)
    if product is None:
        raise NotFound(f"No product with item number {item_number!r}")
    images = (await read_images(session, [product.id], base_url)).get(product.id, [])
    if channel == "b2c" and product.use_sort_b2c:
        images = sorted(images, key=lambda i: (i.sort_b2c is None, i.sort_b2c or 0, i.sort))
    return images


async def read_images(
    session: AsyncSession, product_ids: Sequence[int], base_url: str
) -> dict[int, list[ImageRead]]:
    """The images of these products (in sort order), by product id."""
    images = await repository.images_of_products(session, product_ids)
    skus = await repository.variant_skus(
        session, {link.variant_id for i in images for link in i.variant_links}
    )
    renditions = await repository.renditions_of_blobs(session, {i.blob_id for i in images})
    by_product: dict[int, list[ImageRead]] = {}
    for image in images:
        by_product.setdefault(image.product_id, []).append(
            image_read(image, skus, renditions.get(image.blob_id, []), base_url)
        )
    return by_product


def rendition_filename(image: Image) -> str:
    return f"{PurePosixPath(image.filename).stem}.webp"


def image_read(
    image: Image, skus: dict[int, str], renditions: Sequence[Rendition], base_url: str
) -> ImageRead:
    name = rendition_filename(image)
    return ImageRead(
        id=image.id,
        url=image.url,
        existance_key=image.existance_key,
        sort=image.sort,
        sort_b2c=image.sort_b2c,
        alt=image.alt,
        filename=image.filename,
        variants=sorted(skus[link.variant_id] for link in image.variant_links),
        width=image.blob.width,
        height=image.blob.height,
        content_type=image.blob.content_type,
        size=image.blob.size,
        sha256=image.blob.sha256,
        file_url=f"{base_url}images/{image.id}/{image.filename}",
        renditions=[
            RenditionRead(
                width=r.width,
                height=r.height,
                state=r.state,
                size=r.size,
                url=f"{base_url}images/{image.id}/w{r.width}/{name}"
                if r.state == "ready"
                else None,
                error=r.error if r.state == "failed" else None,
            )
            for r in renditions
        ],
        created_at=image.created_at,
        updated_at=image.updated_at,
    )


async def get_image_file(session: AsyncSession, image_id: str) -> Image:
    image = await repository.get_image(session, image_id)
    if image is None:
        raise NotFound(f"No image {image_id!r}")
    return image


async def get_rendition_file(
    session: AsyncSession, image_id: str, width: int, filename: str
) -> tuple[Image, Rendition]:
    image = await get_image_file(session, image_id)
    if filename != rendition_filename(image):
        raise NotFound(f"Image {image_id!r}'s renditions are named {rendition_filename(image)!r}")
    for rendition in (await repository.renditions_of_blobs(session, [image.blob_id])).get(
        image.blob_id, []
    ):
        if rendition.width == width and rendition.state == "ready" and rendition.storage_key:
            return image, rendition
    raise NotFound(f"Image {image_id!r} has no ready rendition {width} px wide")
