"""What a product of a job ends with, and what the job shows: its status is derived from
its products, never stored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic_core import to_json

from imagesync.kit.db import utcnow
from imagesync.sync.core.planner import Identity, ImageSpec, RuleWarning
from imagesync.sync.schemas import (
    ImageError,
    ImageResult,
    ImageWarning,
    JobStatus,
    Outcome,
    ProductResult,
    Refresh,
    SyncCounts,
    SyncJobRead,
)


class Entry(Protocol):
    """A product of a job, as its result is made and shown: a `SyncJobProduct` row (read
    by a worker or a job's reader), or a `Submitted` one."""

    item_number: str
    status: str
    result: dict[str, Any] | None
    finished_at: datetime | None


class Job(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def created_at(self) -> datetime: ...

    @property
    def products(self) -> Sequence[Entry]: ...


@dataclass(slots=True, eq=False)
class Submitted:
    """A product of a job being submitted: the `sync_job_product` row it is inserted as
    (plain, not a unit of work of the ORM), and the result it ended with at once, if any,
    as recorded: the `ProductResult` dumped, which the answer writes as it is."""

    job_id: str
    account_id: int
    position: int
    item_number: str
    # The product as requested, which its run reads: a product ended at once has none.
    request: dict[str, Any] = field(default_factory=dict)
    status: str = "queued"
    result: dict[str, Any] | None = None
    finished_at: datetime | None = None
    seq: int = 0  # once inserted

    def row(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "account_id": self.account_id,
            "position": self.position,
            "item_number": self.item_number,
            "status": self.status,
            "request": self.request,
            "result": self.result,
            "finished_at": self.finished_at,
        }


@dataclass(slots=True, eq=False)
class SubmittedJob:
    """A job as its submission recorded it."""

    id: str
    created_at: datetime
    notify: bool
    products: list[Submitted] = field(default_factory=list)


def image_result(
    spec: ImageSpec,
    outcome: Outcome,
    image_id: str | None,
    error: ImageError | None = None,
    warning: RuleWarning | None = None,
    refresh: Refresh | None = None,
) -> ImageResult:
    return ImageResult(
        url=spec.url,
        existance_key=spec.existance_key,
        outcome=outcome,
        image_id=image_id,
        error=error,
        warnings=[] if warning is None else [image_warning(warning)],
        refresh=refresh,
    )


def image_warning(warning: RuleWarning) -> ImageWarning:
    return ImageWarning(code=warning.code, detail=warning.detail)


# What `SyncCounts().model_dump()` records, made once.
_NO_COUNTS: dict[str, int] = SyncCounts().model_dump(mode="json")


def kept(entry: Entry, specs: list[ImageSpec], image_ids: list[str]) -> dict[str, Any]:
    """The product's images were already exactly the request's: each kept as it is. As
    it is recorded, the `ProductResult` dumped (`record_kept` ends an entry with it): a
    nightly re-send ends every product this way, and a model made and dumped per image
    cost twice as much."""
    return {
        "item_number": entry.item_number,
        "status": "succeeded",
        "error": None,
        "counts": {**_NO_COUNTS, "kept": len(specs)},
        "images": [
            {
                "url": spec.url,
                "existance_key": spec.existance_key,
                "outcome": "kept",
                "image_id": image_id,
                "error": None,
                "warnings": [],
                "refresh": None,
            }
            for spec, image_id in zip(specs, image_ids, strict=True)
        ],
    }


def superseded(entry: Entry) -> ProductResult:
    return ProductResult(
        item_number=entry.item_number,
        status="superseded",
        error=ImageError(
            code="superseded", detail="a newer sync of this product was applied first; it wins"
        ),
    )


def failed_with(entry: Entry, code: str, detail: str) -> ProductResult:
    """The product failed as a whole, for one reason."""
    return ProductResult(
        item_number=entry.item_number,
        status="failed",
        error=ImageError(code=code, detail=detail),
    )


def failed(
    entry: Entry,
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


def finish(entry: Entry, result: ProductResult) -> None:
    """End the entry with `result` (written with the caller's transaction)."""
    entry.status = result.status
    entry.result = result.model_dump(mode="json")
    entry.finished_at = utcnow()


def record_kept(entry: Entry, recorded: dict[str, Any]) -> None:
    """End the entry with the result `kept` made, as recorded; the answer reads it back."""
    entry.status = recorded["status"]
    entry.result = recorded
    entry.finished_at = utcnow()


def note_error(entry: Entry, error: ImageError) -> None:
    """Show why the product's attempt did not finish while it waits to be tried again."""
    entry.result = ProductResult(
        item_number=entry.item_number, status="queued", error=error
    ).model_dump(mode="json")


def job_status(statuses: Sequence[str]) -> JobStatus:
    if any(s in ("queued", "running") for s in statuses):
        return "queued" if all(s == "queued" for s in statuses) else "running"
    failed = sum(s == "failed" for s in statuses)
    if failed == 0:
        return "succeeded"
    return "failed" if failed == len(statuses) else "partially_failed"


def product_result(entry: Entry) -> ProductResult:
    """The entry's result; while it is still to run, its status with the error of the
    attempt that is to be tried again, if any."""
    if entry.result is None:
        return ProductResult.model_validate(
            {"item_number": entry.item_number, "status": entry.status}
        )
    result = ProductResult.model_validate(entry.result)
    if result.status != entry.status:  # a noted error: the entry runs again
        result = result.model_copy(update={"status": entry.status})
    return result


def job_read(job: Job) -> SyncJobRead:
    status = job_status([entry.status for entry in job.products])
    return SyncJobRead(
        id=job.id,
        status=status,
        created_at=job.created_at,
        finished_at=_finished_at(job.products, status),
        products=[product_result(entry) for entry in job.products],
    )


def _finished_at(products: Sequence[Entry], status: JobStatus) -> datetime | None:
    """When the job finished: its last product's end, once none is left to run."""
    finished = [e.finished_at for e in products if e.finished_at is not None]
    return max(finished) if status not in ("queued", "running") and finished else None


@dataclass(frozen=True, slots=True)
class Answer:
    """A job as an answer shows it: its status, when it was recorded, and its JSON."""

    status: JobStatus
    created_at: datetime
    body: bytes


def answer(job: Job) -> Answer:
    """The job read back (`job_read`), as an answer."""
    read = job_read(job)
    return Answer(read.status, read.created_at, read.model_dump_json().encode())


def submitted_answer(job: SubmittedJob) -> Answer:
    """The job just submitted, as `answer` would show it, written from the results its
    products were recorded with (each a `ProductResult` dumped), not validated back into
    models: a nightly re-send's answer is ten kept products, and parsing them back cost
    a tenth of its request."""
    status = job_status([entry.status for entry in job.products])
    body = {
        "id": job.id,
        "status": status,
        "created_at": job.created_at,
        "finished_at": _finished_at(job.products, status),
        "products": [
            entry.result if entry.result is not None else _unended(entry) for entry in job.products
        ],
    }
    return Answer(status, job.created_at, to_json(body))


def _unended(entry: Entry) -> dict[str, Any]:
    return {**_UNENDED, "item_number": entry.item_number, "status": entry.status}


# A product still to run, as `ProductResult` dumps it (its item number and status aside).
_UNENDED: dict[str, Any] = ProductResult(item_number="", status="queued").model_dump(mode="json")
