"""A dry run: the plan a sync of a request would carry out now, made exactly as a real
sync makes it (the same validation, the same planner), with nothing downloaded, recorded
or changed."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.catalog.models import Account
from imagesync.sync import repository
from imagesync.sync.core.planner import ImageSpec
from imagesync.sync.intake.submit import validate_request
from imagesync.sync.results import image_warning
from imagesync.sync.run.apply import Planned, plan_products, spec_of
from imagesync.sync.schemas import (
    ImageError,
    ImageSyncRequest,
    PlanCounts,
    PlannedAction,
    PlannedDeletion,
    PlannedImage,
    PlannedProduct,
    SyncPlan,
)


async def plan(
    session: AsyncSession,
    account: Account,
    request: ImageSyncRequest,
    *,
    max_images: int,
    allow: frozenset[tuple[str, int]],
    ports: frozenset[int],
) -> SyncPlan:
    """Each product's plan, in the request's order; only reads."""
    validate_request(request, max_images=max_images, allow=allow, ports=ports)
    numbers = [item.item_number for item in request.items]
    products = await repository.products_by_item(session, account.id, numbers)
    pending = await repository.items_with_unfinished(session, account.id, numbers, other_than="")
    wanted = [
        (products[item.item_number], [spec_of(i) for i in item.images], item.use_sort_b2c)
        for item in request.items
        if item.item_number in products
    ]
    plans = {pid: planned for pid, (_, planned) in (await plan_products(session, wanted)).items()}
    creates = [c for planned in plans.values() for c in planned.plan.creates]
    known = await repository.find_sources(
        session, account.id, {c.spec.identity.digest for c in creates}
    )
    attached: set[int] = set()
    for planned in plans.values():
        for create in planned.plan.creates:
            attached |= create.variant_ids
        for keep in planned.plan.keeps:
            attached |= keep.variant_ids
    skus = await repository.variant_skus(session, attached)
    result = []
    for number in numbers:
        product = products.get(number)
        if product is None:
            error = ImageError(
                code="product_not_found", detail=f"the account has no product {number!r}"
            )
            result.append(PlannedProduct(item_number=number, status="failed", error=error))
            continue
        result.append(_product_plan(number, plans[product.id], set(known), skus, number in pending))
    return SyncPlan(products=result)


def _product_plan(
    item_number: str,
    planned: Planned,
    known: Collection[str],
    skus: Mapping[int, str],
    pending: bool,
) -> PlannedProduct:
    plan = planned.plan
    images: dict[int, PlannedImage] = {}
    counts = PlanCounts()
    for create in plan.creates:
        download = create.spec.identity.digest not in known
        images[create.index] = _image(
            create.spec,
            "create",
            None,
            create.variant_ids,
            skus,
            download=download,
            refresh=create.spec.refresh and not download,
        )
        counts.create += 1
        counts.download += download
    for keep in plan.keeps:
        action: PlannedAction = "update" if keep.changed else "keep"
        images[keep.index] = _image(
            keep.spec, action, keep.image_id, keep.variant_ids, skus, refresh=keep.spec.refresh
        )
        if keep.changed:
            counts.update += 1
        else:
            counts.keep += 1
    for skip in plan.skips:
        images[skip.index] = _image(skip.spec, "skip", None, frozenset(), skus)
        counts.skip += 1
    for index, warning in plan.warnings.items():
        images[index].warnings.append(image_warning(warning))
    current = {image.image_id: image.spec for image in planned.current}
    deletes = [
        PlannedDeletion(
            image_id=image_id,
            url=current[image_id].url,
            existance_key=current[image_id].existance_key,
        )
        for image_id in plan.deletes
    ]
    counts.delete = len(deletes)
    counts.refresh = sum(image.refresh for image in images.values())
    return PlannedProduct(
        item_number=item_number,
        status="planned",
        pending=pending,
        counts=counts,
        images=[images[i] for i in range(len(planned.specs))],
        deletes=deletes,
    )


def _image(
    spec: ImageSpec,
    action: PlannedAction,
    image_id: str | None,
    variant_ids: frozenset[int],
    skus: Mapping[int, str],
    *,
    download: bool = False,
    refresh: bool = False,
) -> PlannedImage:
    return PlannedImage(
        url=spec.url,
        existance_key=spec.existance_key,
        action=action,
        image_id=image_id,
        variants=sorted(skus[v] for v in variant_ids),
        download=download,
        refresh=refresh,
    )
