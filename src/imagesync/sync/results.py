"""What a product of a job ends with, as its job shows it."""

from __future__ import annotations

from imagesync.kit.db import utcnow
from imagesync.sync.core.planner import Identity, ImageSpec, RuleWarning
from imagesync.sync.models import SyncJobProduct
from imagesync.sync.schemas import (
    ImageError,
    ImageResult,
    ImageWarning,
    Outcome,
    ProductResult,
    SyncCounts,
)


def image_result(
    spec: ImageSpec,
    outcome: Outcome,
    image_id: str | None,
    error: ImageError | None = None,
    warning: RuleWarning | None = None,
) -> ImageResult:
    return ImageResult(
        url=spec.url,
        existance_key=spec.existance_key,
        outcome=outcome,
        image_id=image_id,
        error=error,
        warnings=[] if warning is None else [image_warning(warning)],
    )


def image_warning(warning: RuleWarning) -> ImageWarning:
    return ImageWarning(code=warning.code, detail=warning.detail)


def kept(entry: SyncJobProduct, specs: list[ImageSpec], image_ids: list[str]) -> ProductResult:
    """The product's images were already exactly the request's: each kept as it is."""
    return ProductResult(
        item_number=entry.item_number,
        status="succeeded",
        counts=SyncCounts(kept=len(specs)),
        images=[
            image_result(spec, "kept", image_id)
            for spec, image_id in zip(specs, image_ids, strict=True)
        ],
    )


def superseded(entry: SyncJobProduct) -> ProductResult:
    return ProductResult(
        item_number=entry.item_number,
        status="superseded",
        error=ImageError(
            code="superseded", detail="a newer sync of this product was applied first; it wins"
        ),
    )


def failed_with(entry: SyncJobProduct, code: str, detail: str) -> ProductResult:
    """The product failed as a whole, for one reason."""
    return ProductResult(
        item_number=entry.item_number,
        status="failed",
        error=ImageError(code=code, detail=detail),
    )


def failed(
    entry: SyncJobProduct,
    specs: list[ImageSpec],
    failures: dict[Identity, ImageError],
    downloaded: int,
) -> ProductResult:
    """Some images could not be fetched or used: none of the product's images changed."""
    images = []
    for spec in specs:
        error = failures.get(spec.identity)
        images.append(image_result(spec, "failed" if error else "not_applied", None, error))
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


def finish(entry: SyncJobProduct, result: ProductResult) -> None:
    """End the entry with `result` (written with the caller's transaction)."""
    entry.status = result.status
    entry.result = result.model_dump(mode="json")
    entry.finished_at = utcnow()


def note_error(entry: SyncJobProduct, error: ImageError) -> None:
    """Show why the product's attempt did not finish while it waits to be tried again."""
    entry.result = ProductResult(
        item_number=entry.item_number, status="queued", error=error
    ).model_dump(mode="json")
