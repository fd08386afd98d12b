"""Sending validated products: ten per sync, a few syncs at once, each job waited for,
every product's outcome kept for the summary and the report."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from imagesync.client import ApiError, AsyncClient, ConnectionFailed, InvalidRequest, chunks
from imagesync.sync.schemas import (
    ImageError,
    ImageResult,
    PlannedImage,
    PlannedProduct,
    ProductImagesIn,
    ProductResult,
    SyncJobRead,
    SyncPlan,
)

WAIT = 20.0
_POINTER = re.compile(r"^/products/(\d+)(/.*)?$")


@dataclass
class Tally:
    """What has been done so far: read by the progress display while sending."""

    products: int = 0  # total to send
    images: int = 0
    products_done: int = 0
    images_done: int = 0
    downloads: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    results: list[ProductResult] = field(default_factory=list)
    plans: list[PlannedProduct] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Images per second since the start."""
        return self.images_done / max(time.monotonic() - self.started, 1e-9)

    def add(self, result: ProductResult, images: int) -> None:
        self.results.append(result)
        self.products_done += 1
        self.images_done += images
        self.downloads += result.counts.downloaded
        self.failed += result.status != "succeeded"

    def add_plan(self, plan: PlannedProduct, images: int) -> None:
        self.plans.append(plan)
        self.products_done += 1
        self.images_done += images
        self.downloads += plan.counts.download
        self.failed += plan.status != "planned"


async def push(
    client: AsyncClient,
    products: Sequence[ProductImagesIn],
    tally: Tally,
    *,
    concurrency: int = 4,
    dry_run: bool = False,
    refresh: bool = False,
    on_change: Callable[[], None] = lambda: None,
) -> None:
    """Sync (or plan) every product, `concurrency` syncs of ten at once. A product the
    server refuses (422) is reported as failed with the server's codes; the rest of its
    batch is sent again without it. A batch too big for one request is sent in halves.
    `refresh` asks the origins of known images whether their bytes changed."""
    tally.products = len(products)
    tally.images = sum(len(p.images) for p in products)
    gate = asyncio.Semaphore(concurrency)

    async def send(batch: list[ProductImagesIn]) -> None:
        async with gate:
            await _send_batch(client, batch, tally, dry_run=dry_run, refresh=refresh)
        on_change()

    async with asyncio.TaskGroup() as group:
        for batch in chunks(products):
            group.create_task(send(batch))


async def _send_batch(
    client: AsyncClient,
    batch: list[ProductImagesIn],
    tally: Tally,
    *,
    dry_run: bool,
    refresh: bool = False,
) -> None:
    while batch:
        try:
            # The server holds the answer until the job finishes (or WAIT seconds pass).
            answer: SyncJobRead | SyncPlan = await (
                client.plan_images(batch, refresh=refresh)
                if dry_run
                else client.sync_images(batch, wait=WAIT, refresh=refresh)
            )
        except InvalidRequest as exc:
            if exc.status == 413 and len(batch) > 1:  # too big a body: send it in halves
                half = len(batch) // 2
                for part in (batch[:half], batch[half:]):
                    await _send_batch(client, part, tally, dry_run=dry_run, refresh=refresh)
                return
            refused = _refused_products(exc, len(batch))
            if not refused:  # not about one product: all of them fail with it
                refused = {i: [_error_of(exc)] for i in range(len(batch))}
            for index, errors in refused.items():
                _fail(tally, batch[index], errors, dry_run=dry_run)
            batch = [p for i, p in enumerate(batch) if i not in refused]
            continue
        except (ApiError, ConnectionFailed) as exc:
            for product in batch:
                _fail(tally, product, [_error_of(exc)], dry_run=dry_run)
            return
        if isinstance(answer, SyncPlan):
            for product, plan in zip(batch, answer.products, strict=True):
                tally.add_plan(plan, len(product.images))
            return
        job = await _finished(client, answer)
        for product, result in zip(batch, job.products, strict=True):
            tally.add(result, len(product.images))
        return


async def _finished(client: AsyncClient, job: SyncJobRead) -> SyncJobRead:
    try:
        return await client.wait_for_job(job)
    except (ApiError, ConnectionFailed) as exc:
        # The job runs on in the service; only reading it failed. Its products are
        # reported with that error: running the push again shows where they ended.
        error = _error_of(exc)
        return job.model_copy(
            update={
                "products": [
                    p.model_copy(update={"status": "failed", "error": error}) for p in job.products
                ]
            }
        )


def _refused_products(exc: InvalidRequest, size: int) -> dict[int, list[ImageError]]:
    refused: dict[int, list[ImageError]] = {}
    for error in exc.errors:
        pointer = error.source.pointer if error.source else None
        match = _POINTER.match(pointer or "")
        if match and int(match[1]) < size:
            detail = f"{error.detail} ({match[2] or 'the product'})"
            refused.setdefault(int(match[1]), []).append(ImageError(code=error.code, detail=detail))
    return refused


def _error_of(exc: ApiError | ConnectionFailed) -> ImageError:
    if isinstance(exc, ApiError) and exc.errors:
        return ImageError(code=exc.errors[0].code, detail=exc.errors[0].detail)
    if isinstance(exc, ConnectionFailed):
        return ImageError(code="not_sent", detail=f"cannot reach the service: {exc.reason}")
    return ImageError(code="not_sent", detail=str(exc))


def _fail(
    tally: Tally, product: ProductImagesIn, errors: list[ImageError], *, dry_run: bool
) -> None:
    first = (
        errors[0]
        if len(errors) == 1
        else ImageError(code=errors[0].code, detail="; ".join(e.detail for e in errors))
    )
    if dry_run:
        plan = PlannedProduct(item_number=product.item_number, status="failed", error=first)
        tally.add_plan(plan, len(product.images))
    else:
        result = ProductResult(item_number=product.item_number, status="failed", error=first)
        tally.add(result, len(product.images))


def warnings_of(tally: Tally) -> list[dict[str, str]]:
    """Every image's warning (a rule that matched no variant), with its product and URL:
    the images were applied, attached to their product only."""
    images: list[tuple[str, ImageResult | PlannedImage]] = [
        (r.item_number, i) for r in tally.results for i in r.images
    ]
    images += [(p.item_number, i) for p in tally.plans for i in p.images]
    return [
        {"item_number": item_number, "url": image.url, **warning.model_dump()}
        for item_number, image in images
        for warning in image.warnings
    ]


def error_codes(tally: Tally) -> Counter[str]:
    """How often each code failed a product or an image."""
    codes: Counter[str] = Counter()
    for result in tally.results:
        codes.update(result.failure_codes())
    for plan in tally.plans:
        if plan.error is not None:
            codes[plan.error.code] += 1
    return codes
