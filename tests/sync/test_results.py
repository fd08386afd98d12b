"""A product kept as it was is recorded as a dict made by hand, not a model dumped: it
must be exactly what the model would record."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from imagesync.sync.core.planner import ImageSpec
from imagesync.sync.results import Submitted, image_result, kept
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
