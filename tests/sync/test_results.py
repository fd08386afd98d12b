"""A product kept as it was is recorded as a dict made by hand, not a model dumped, and a
submission is answered from what its products recorded: each must be exactly what the
model would say."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from imagesync.sync.core.planner import ImageSpec
from imagesync.sync.results import (
    Submitted,
    SubmittedJob,
    failed_with,
    finish,
    image_result,
    job_read,
    kept,
    record_kept,
    submitted_answer,
)
from imagesync.sync.schemas import ProductResult, SyncCounts

_SPECS = st.lists(
    st.builds(
        ImageSpec,
        url=st.text(min_size=1, max_size=20),
        sort=st.integers(),
        existance_key=st.none() | st.text(max_size=10),
    ),
    max_size=6,
)


@given(specs=_SPECS, item_number=st.text(min_size=1, max_size=10))
def test_a_kept_product_is_recorded_as_its_model_would_be(
    specs: list[ImageSpec], item_number: str
) -> None:
    entry = Submitted("job", 1, 0, item_number)
    ids = [f"image-{i}" for i in range(len(specs))]
    model = ProductResult(
        item_number=item_number,
        status="succeeded",
        counts=SyncCounts(kept=len(specs)),
        images=[image_result(s, "kept", i) for s, i in zip(specs, ids, strict=True)],
    )
    recorded = kept(entry, specs, ids)
    assert recorded == model.model_dump(mode="json")
    assert ProductResult.model_validate(recorded) == model


_ENDS = st.lists(
    st.tuples(st.sampled_from(["kept", "failed", "queued", "applied"]), _SPECS),
    min_size=1,
    max_size=10,
)


@given(ends=_ENDS, created_at=st.datetimes(timezones=st.just(UTC)))
def test_a_submitted_job_is_answered_as_its_model_would_be(
    ends: list[tuple[str, list[ImageSpec]]], created_at: datetime
) -> None:
    """The answer of a submission is written from its products' recorded results, not
    validated back into models: byte for byte what the job's model would say."""
    job = SubmittedJob("job", created_at, notify=False)
    for position, (end, specs) in enumerate(ends):
        entry = Submitted("job", 1, position, f"item-{position}")
        job.products.append(entry)
        ids = [f"image-{i}" for i in range(len(specs))]
        if end == "kept":
            record_kept(entry, kept(entry, specs, ids))
        elif end == "failed":
            finish(entry, failed_with(entry, "product_not_found", "no such product"))
        elif end == "applied":
            images = [image_result(s, "created", i) for s, i in zip(specs, ids, strict=True)]
            finish(
                entry,
                ProductResult(
                    item_number=entry.item_number,
                    status="succeeded",
                    counts=SyncCounts(created=len(specs)),
                    images=images,
                ),
            )
    answer = submitted_answer(job)
    model = job_read(job)
    assert answer.body == model.model_dump_json().encode()
    assert (answer.status, answer.created_at) == (model.status, model.created_at)
