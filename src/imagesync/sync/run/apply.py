"""Planning a product against its current images, and applying that plan: the whole new
image set in one transaction, or nothing."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.kit.db import utcnow
from imagesync.storage import repository as blob_repository
from imagesync.storage.renditions import queue_renditions
from imagesync.sync import repository
from imagesync.sync.core.filenames import effective_filename
from imagesync.sync.core.planner import (
    CurrentImage,
    ImageSpec,
    ProductPlan,
    VariantCodes,
    plan_product_sync,
)
from imagesync.sync.models import Image, ImageVariant
from imagesync.sync.results import Entry, image_result
from imagesync.sync.run.context import SyncContext
from imagesync.sync.run.download import Stored
from imagesync.sync.schemas import ImageIn, ImageResult, ProductResult, Refresh, SyncCounts


class ProductRow(Protocol):
    """What planning and applying read of a product: the ORM's `Product`, or the plain
    row a run reads (`repository.product_for_run`)."""

    @property
    def id(self) -> int: ...
    @property
    def account_id(self) -> int: ...
    @property
    def use_sort_b2c(self) -> bool: ...
    @property
    def images_version(self) -> int: ...


class Requeue(Exception):
    """A blob the plan counted on is being collected: plan and download again."""


@dataclass(frozen=True)
class Planned:
    """A product's plan, with what it was made from: applying re-plans only when the
    product's images or variants changed meanwhile (its `images_version` moved)."""

    account_id: int
    specs: list[ImageSpec]
    use_sort_b2c: bool | None
    current: list[CurrentImage]
    variants: list[VariantCodes]
    plan: ProductPlan
    version: int


async def plan_products(
    session: AsyncSession, wanted: Sequence[tuple[ProductRow, list[ImageSpec], bool | None]]
) -> dict[int, tuple[dict[str, int], Planned]]:
    """Each product's plan from its current images to its specs, with the blob of each
    current image by image id, by product id; read as plain rows, in a few queries for
    all of them (applying loads only the images that change)."""
    ids = [product.id for product, _, _ in wanted]
    rows = await repository.image_rows(session, ids)
    links = await repository.image_links(session, ids)
    variants = await repository.variant_codes(session, ids)
    current: dict[int, list[CurrentImage]] = {pid: [] for pid in ids}
    blob_ids: dict[int, dict[str, int]] = {pid: {} for pid in ids}
    for row in rows:
        spec = repository.stored_spec(row)
        current[row.product_id].append(CurrentImage(row.id, spec, frozenset(links.get(row.id, ()))))
        blob_ids[row.product_id][row.id] = row.blob_id
    plans = {}
    for product, specs, use_sort_b2c in wanted:
        codes = variants.get(product.id, [])
        mine = current[product.id]
        plan = plan_product_sync(mine, specs, codes, use_sort_b2c=use_sort_b2c)
        plans[product.id] = (
            blob_ids[product.id],
            Planned(
                product.account_id, specs, use_sort_b2c, mine, codes, plan, product.images_version
            ),
        )
    return plans


async def plan_product(
    session: AsyncSession,
    product: ProductRow,
    specs: list[ImageSpec],
    use_sort_b2c: bool | None,
) -> tuple[dict[str, int], Planned]:
    """The plan from the product's current images to `specs`, with their blob ids."""
    return (await plan_products(session, [(product, specs, use_sort_b2c)]))[product.id]


async def apply_plan(
    ctx: SyncContext,
    session: AsyncSession,
    entry: Entry,
    product: ProductRow,
    blob_ids: dict[str, int],
    planned: Planned,
    stored: dict[str, Stored],
    downloaded: int,
    revalidated: Mapping[str, Refresh] | None = None,
) -> ProductResult:
    """Make the product's images exactly the plan's, inside the caller's transaction,
    which already holds the product (see `take_product_for_seq`) and planned from its
    images as they are now (`blob_ids`: their blobs by image id). `stored` has the blob
    of every identity the plan creates, by its digest, each marked in use in this same
    transaction (`touch_blobs`), so the collector cannot take it. The changes are
    written when the caller flushes or commits: one batch for all the products of a
    request.

    `revalidated` says, by identity digest, what the origin of each image asked to be
    refreshed answered (`refreshed`, `unchanged`); `stored` then has its source's bytes
    as they are now, and a kept image whose bytes differ takes them: its file and
    renditions are replaced, its id stays."""
    plan = planned.plan
    revalidated = revalidated or {}
    now = utcnow()
    swaps = {
        keep.image_id: stored[digest]
        for keep in plan.keeps
        if (digest := keep.spec.identity.digest) in revalidated
        and stored[digest].blob_id != blob_ids[keep.image_id]
    }
    released = {blob_ids[i] for i in plan.deletes} | {blob_ids[i] for i in swaps}
    changing = [k.image_id for k in plan.keeps if k.changed or k.image_id in swaps]
    images = {
        i.id: i for i in await repository.images_by_id(session, changing + list(plan.deletes))
    }
    await blob_repository.touch_blobs(session, released, now)  # the grace period starts now
    used = {stored[c.spec.identity.digest] for c in plan.creates} | set(swaps.values())
    await queue_renditions(ctx.blobs, session, [(s.blob_id, s.width) for s in used])
    results: dict[int, ImageResult] = {}
    counts = SyncCounts(downloaded=downloaded)

    def refresh(spec: ImageSpec, refreshed: bool) -> Refresh | None:
        if spec.identity.digest not in revalidated:
            return None
        if refreshed:
            counts.refreshed += 1
            return "refreshed"
        counts.unchanged += 1
        return "unchanged"

    new_images: list[dict[str, Any]] = []
    new_links: list[dict[str, Any]] = []
    for create in plan.creates:
        blob = stored[create.spec.identity.digest]
        image_id = uuid.uuid4().hex
        new_images.append(
            {
                "id": image_id,
                "product_id": product.id,
                "source_id": blob.source_id,
                "blob_id": blob.blob_id,
                "created_at": now,
                "updated_at": now,
                "filename": effective_filename(create.spec, blob.content_type),
                **metadata_of(create.spec),
            }
        )
        new_links += [{"image_id": image_id, "variant_id": v} for v in sorted(create.variant_ids)]
        counts.created += 1
        results[create.index] = image_result(
            create.spec,
            "created",
            image_id,
            warning=plan.warnings.get(create.index),
            refresh=refresh(
                create.spec, revalidated.get(create.spec.identity.digest) == "refreshed"
            ),
        )
    # Written at once, as plain rows: no image of the plan's deletes has the identity
    # (the source) of one it creates.
    await repository.add_images(session, new_images, new_links)
    for keep in plan.keeps:
        swap = swaps.get(keep.image_id)
        if keep.changed or swap is not None:
            image = images[keep.image_id]
            content_type = image.blob.content_type
            if swap is not None:
                image.blob_id, content_type = swap.blob_id, swap.content_type
            set_metadata(image, keep.spec)
            image.filename = effective_filename(keep.spec, content_type)
            relink(image, keep.variant_ids)
            image.updated_at = now
            counts.updated += 1
        else:
            counts.kept += 1
        results[keep.index] = image_result(
            keep.spec,
            "updated" if keep.changed or swap is not None else "kept",
            keep.image_id,
            warning=plan.warnings.get(keep.index),
            refresh=refresh(keep.spec, swap is not None),
        )
    for skip in plan.skips:
        counts.skipped += 1
        results[skip.index] = image_result(skip.spec, "skipped", None)
    for image_id in plan.deletes:
        await session.delete(images[image_id])
        counts.deleted += 1
    if planned.use_sort_b2c is not None and planned.use_sort_b2c != product.use_sort_b2c:
        await repository.set_use_sort_b2c(session, product.id, planned.use_sort_b2c)
    # The product's `updated_at` was stamped as it was taken for this sync, in this
    # same transaction (`take_product_for_seq`): not again here.
    return ProductResult(
        item_number=entry.item_number,
        status="succeeded",
        counts=counts,
        images=[results[i] for i in range(len(planned.specs))],
    )


def metadata_of(spec: ImageSpec) -> dict[str, Any]:
    """An image row's columns that its spec sets."""
    return {
        "url": spec.url,
        "existance_key": spec.existance_key,
        "sort": spec.sort,
        "sort_b2c": spec.sort_b2c,
        "alt": spec.alt,
        "custom_filename": spec.filename,
        "attach_rule": dict(spec.attach_rule) if spec.attach_rule else None,
    }


def set_metadata(image: Image, spec: ImageSpec) -> None:
    for column, value in metadata_of(spec).items():
        setattr(image, column, value)


def relink(image: Image, variant_ids: frozenset[int]) -> bool:
    """Attach the image to exactly these variants; whether that changed anything."""
    current = {link.variant_id: link for link in image.variant_links}
    if set(current) == variant_ids:
        return False
    for variant_id, link in current.items():
        if variant_id not in variant_ids:
            image.variant_links.remove(link)
    for variant_id in sorted(variant_ids - set(current)):
        image.variant_links.append(ImageVariant(variant_id=variant_id))
    return True


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
        refresh=image.refresh,
    )


def specs_of_request(request: dict[str, Any]) -> list[ImageSpec]:
    """The specs of a product's request as its job entry keeps it (`model_dump(mode=
    "json")` of a validated `ProductImagesIn`): taken by value, not validated again."""
    return [
        ImageSpec(
            url=image["url"],
            sort=image["sort"],
            sort_b2c=image.get("sort_b2c"),
            existance_key=image.get("existance_key"),
            alt=image.get("alt"),
            filename=image.get("filename"),
            attach_rule=dict(rule)
            if (rule := image.get("attach_to_variants_matching_attribute_code"))
            else None,
            skip_if_no_variant_matches=bool(image.get("skip_if_no_variant_matches_attribute_code")),
            refresh=bool(image.get("refresh")),
        )
        for image in request["images"]
    ]
