"""A product's images: reading and serving them, and keeping their variant links true
when the catalog changes (the catalog announces it; see `CatalogImages`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.catalog.models import Account, Product
from imagesync.catalog.products import variant_read
from imagesync.kit.db import utcnow
from imagesync.kit.errors import NotFound
from imagesync.kit.pagination import PageParams
from imagesync.storage import repository as blob_repository
from imagesync.storage.models import Rendition
from imagesync.sync import repository
from imagesync.sync.core.filenames import rendition_filename, url_segment
from imagesync.sync.core.planner import matching_variants
from imagesync.sync.models import Image
from imagesync.sync.run.apply import relink
from imagesync.sync.schemas import ImageRead, ProductRead, RenditionRead

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CatalogImages:
    """What image sync does when the catalog changes (see `catalog.events`). Instances
    are equal, so registering one again, as each process start does, adds nothing."""

    async def products_deleting(self, session: AsyncSession, product_ids: Sequence[int]) -> None:
        await release_images(session, product_ids)

    async def products_changed(self, session: AsyncSession, product_ids: Sequence[int]) -> None:
        # A run planned before this change re-plans at apply (`run._apply`).
        await repository.bump_images_version(session, product_ids=product_ids)
        await relink_products(session, product_ids)

    async def codes_changed(self, session: AsyncSession, account: Account) -> None:
        await repository.bump_images_version(session, account_id=account.id)
        await relink_account(session, account)


async def relink_products(session: AsyncSession, product_ids: Sequence[int]) -> None:
    """Re-evaluate the variant rules of these products' images (variants or codes changed)."""
    images = await repository.images_of_products(session, product_ids)
    variants = await repository.variant_codes(session, product_ids)
    changed = sum(
        relink(image, matching_variants(image.attach_rule, variants.get(image.product_id, [])))
        for image in images
    )
    if changed:
        await session.flush()
        log.info("sync.images.relinked", products=len(product_ids), images=changed)


async def release_images(session: AsyncSession, product_ids: Sequence[int]) -> None:
    """These products' images are about to be deleted: their blobs' grace period, after
    which the collector deletes what nothing else uses, starts now."""
    images = await repository.images_of_products(session, product_ids)
    await blob_repository.touch_blobs(session, {i.blob_id for i in images}, utcnow())


async def relink_account(session: AsyncSession, account: Account) -> None:
    await relink_products(session, await repository.products_with_rules(session, account.id))


async def list_images(
    session: AsyncSession,
    account: Account,
    item_number: str,
    *,
    channel: str | None,
    urls: FileUrls,
    page: PageParams | None = None,
) -> tuple[int, list[ImageRead]]:
    """A product's images in sort order (`channel="b2c"`: by `sort_b2c` when the product
    uses B2C sorting), a `page` of them or all, and how many it has. A page reads only its
    own images' rows: a product's read holds the database for one page at a time."""
    product = await repository.get_product(session, account.id, item_number)
    if product is None:
        raise NotFound(f"No product with item number {item_number!r}")
    b2c = channel == "b2c" and product.use_sort_b2c
    offset, limit = (page.offset, page.limit) if page else (0, None)
    total, rows = await repository.images_page(
        session, product.id, b2c=b2c, offset=offset, limit=limit
    )
    return total, await _reads(session, rows, urls)


async def read_images(
    session: AsyncSession, product_ids: Sequence[int], urls: FileUrls
) -> dict[int, list[ImageRead]]:
    """The images of these products (in sort order), by product id."""
    images = await repository.images_of_products(session, product_ids)
    by_product: dict[int, list[ImageRead]] = {}
    for image, read in zip(images, await _reads(session, images, urls), strict=True):
        by_product.setdefault(image.product_id, []).append(read)
    return by_product


async def _reads(session: AsyncSession, images: Sequence[Image], urls: FileUrls) -> list[ImageRead]:
    """These images as the API shows them: with their variants' SKUs and renditions."""
    skus = await repository.variant_skus(
        session, {link.variant_id for i in images for link in i.variant_links}
    )
    renditions = await blob_repository.renditions_of_blobs(session, {i.blob_id for i in images})
    return [image_read(i, skus, renditions.get(i.blob_id, []), urls) for i in images]


VERSION_LENGTH = 16  # hex digits of the bytes' sha256 that a file URL's `v` names


def version(sha256: str) -> str:
    """What a file URL's `v` says of the bytes it is for: new bytes, a new URL."""
    return sha256[:VERSION_LENGTH]


@dataclass(frozen=True)
class FileUrls:
    """Where an image's file and renditions are fetched: the API's file routes under
    `api` (the request's base URL), named by the image and versioned by its bytes (a
    refresh replaces them, and a cache holds each version for a year), or, given
    `public` (IMAGESYNC_PUBLIC_BASE_URL), the bucket's content-addressed keys under it,
    which never change."""

    api: str
    public: str = ""

    def original(self, image: Image) -> str:
        if self.public:
            return f"{self.public}/{image.blob.storage_key}"
        name = url_segment(image.filename)
        return f"{self.api}images/{image.id}/{name}?v={version(image.blob.sha256)}"

    def rendition(self, image: Image, rendition: Rendition) -> str:
        if self.public and rendition.storage_key:
            return f"{self.public}/{rendition.storage_key}"
        name = url_segment(rendition_filename(image.filename))
        return (
            f"{self.api}images/{image.id}/w{rendition.width}/{name}?v={version(image.blob.sha256)}"
        )


def image_read(
    image: Image, skus: dict[int, str], renditions: Sequence[Rendition], urls: FileUrls
) -> ImageRead:
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
        file_url=urls.original(image),
        renditions=[
            RenditionRead(
                width=r.width,
                height=r.height,
                state=r.state,
                size=r.size,
                url=urls.rendition(image, r) if r.state == "ready" else None,
                error=r.error if r.state == "failed" else None,
            )
            for r in renditions
        ],
        created_at=image.created_at,
        updated_at=image.updated_at,
    )


@dataclass(frozen=True)
class StoredFile:
    """A file to send: where it is stored, as what, its ETag, the name it goes by, and
    the version of its image's bytes (see `version`)."""

    key: str
    content_type: str
    etag: str
    filename: str
    version: str


async def get_image_file(session: AsyncSession, image_id: str, filename: str) -> StoredFile:
    found = await repository.image_file(session, image_id)
    if found is None:
        raise NotFound(f"No image {image_id!r}")
    if filename != found.filename:
        # Saying the right name would hand out a working URL to whoever guesses an id.
        raise NotFound(f"No file {filename!r} of image {image_id!r}")
    return StoredFile(
        found.storage_key, found.content_type, found.sha256, found.filename, version(found.sha256)
    )


async def get_rendition_file(
    session: AsyncSession, image_id: str, width: int, filename: str
) -> StoredFile:
    found = await repository.rendition_file(session, image_id, width)
    if found is None or filename != rendition_filename(found.filename):
        # Saying the right name would hand out a working URL to whoever guesses an id.
        raise NotFound(f"No rendition {filename!r} {width} px wide of image {image_id!r}")
    etag = f"{found.sha256}-w{width}"
    return StoredFile(found.storage_key, "image/webp", etag, filename, version(found.sha256))


def product_read(product: Product, images: Sequence[ImageRead] = ()) -> ProductRead:
    """A product with its variants, each listing the ids of its images, and its images."""
    variants = [variant_read(v) for v in product.variants]
    by_sku = {v.sku: v for v in variants}
    for image in images:
        for sku in image.variants:
            by_sku[sku].images.append(image.id)
    return ProductRead(
        item_number=product.item_number,
        name=product.name,
        use_sort_b2c=product.use_sort_b2c,
        created_at=product.created_at,
        updated_at=product.updated_at,
        variants=variants,
        images=list(images),
    )
