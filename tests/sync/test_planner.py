"""The planner is pure: these properties pin DESIGN.md's invariants 1 and 2 at its level."""

from __future__ import annotations

import dataclasses
import itertools

from hypothesis import event, given
from hypothesis import strategies as st

from imagesync.sync.core.planner import (
    CurrentImage,
    ImageSpec,
    ProductPlan,
    StoredImage,
    VariantCodes,
    matching_variants,
    plan_product_sync,
    unchanged,
)

URLS = st.sampled_from([f"https://img.example/{n}.jpg" for n in "abcdef"])
KEYS = st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"]))
CODES = st.sampled_from(["100", "900", "300"])
RULES = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(["Color", "Size"]), st.sampled_from(["100", "900", "XS", "L"]), max_size=2
    ),
)

specs = st.builds(
    ImageSpec,
    url=URLS,
    sort=st.integers(-5, 5),
    sort_b2c=st.one_of(st.none(), st.integers(0, 5)),
    existance_key=KEYS,
    alt=st.one_of(st.none(), st.sampled_from(["front", "back"])),
    filename=st.one_of(st.none(), st.sampled_from(["a.jpg", "b.jpg"])),
    attach_rule=RULES,
    skip_if_no_variant_matches=st.booleans(),
)


def unique_by_identity(items: list[ImageSpec]) -> list[ImageSpec]:
    seen = set()
    out = []
    for spec in items:
        if spec.identity not in seen:
            seen.add(spec.identity)
            out.append(spec)
    return out


requests = st.lists(specs, max_size=8).map(unique_by_identity)
variant_lists = st.lists(
    st.fixed_dictionaries(
        {"Color": st.one_of(CODES, st.none()), "Size": st.sampled_from(["XS", "L"])}
    ),
    max_size=6,
).map(lambda codes: [VariantCodes(i + 1, c) for i, c in enumerate(codes)])

_ids = itertools.count()


def apply(current: list[CurrentImage], plan: ProductPlan) -> list[CurrentImage]:
    """What the worker does with a plan, minus the I/O."""
    by_id = {image.image_id: image for image in current}
    result = [CurrentImage(k.image_id, k.spec, k.variant_ids) for k in plan.keeps]
    result += [CurrentImage(f"new-{next(_ids)}", c.spec, c.variant_ids) for c in plan.creates]
    assert not set(plan.deletes) & {k.image_id for k in plan.keeps}
    assert set(plan.deletes) <= set(by_id)
    return result


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[CurrentImage], list[ImageSpec], list[VariantCodes]]:
    variants = draw(variant_lists)
    previous = draw(requests)
    current = [
        CurrentImage(f"old-{i}", spec, matching_variants(spec.attach_rule, variants))
        for i, spec in enumerate(previous)
    ]
    return current, draw(requests), variants


@given(scenarios())
def test_applied_plan_is_exactly_the_request(
    scenario: tuple[list[CurrentImage], list[ImageSpec], list[VariantCodes]],
) -> None:
    current, requested, variants = scenario
    plan = plan_product_sync(current, requested, variants)
    after = apply(current, plan)

    skipped = {s.index for s in plan.skips}
    expected = [spec for i, spec in enumerate(requested) if i not in skipped]
    assert sorted(image.spec.identity for image in after) == sorted(s.identity for s in expected)
    by_identity = {image.spec.identity: image for image in after}
    for spec in expected:
        image = by_identity[spec.identity]
        assert image.spec == spec  # same metadata (and the new URL when keyed)
        assert image.variant_ids == matching_variants(spec.attach_rule, variants)
    # Every request image is accounted for exactly once.
    indexes = [c.index for c in plan.creates] + [k.index for k in plan.keeps] + sorted(skipped)
    assert sorted(indexes) == list(range(len(requested)))


@given(scenarios())
def test_known_identities_are_kept_never_created_again(
    scenario: tuple[list[CurrentImage], list[ImageSpec], list[VariantCodes]],
) -> None:
    current, requested, variants = scenario
    plan = plan_product_sync(current, requested, variants)
    current_identities = {image.spec.identity: image.image_id for image in current}
    for create in plan.creates:
        assert create.spec.identity not in current_identities
    for keep in plan.keeps:
        assert current_identities[keep.spec.identity] == keep.image_id


@given(scenarios())
def test_omitted_images_are_deleted_and_only_those(
    scenario: tuple[list[CurrentImage], list[ImageSpec], list[VariantCodes]],
) -> None:
    current, requested, variants = scenario
    plan = plan_product_sync(current, requested, variants)
    requested_identities = {spec.identity for spec in requested}
    assert set(plan.deletes) == {
        image.image_id for image in current if image.spec.identity not in requested_identities
    }


@given(scenarios())
def test_planning_the_result_again_changes_nothing(
    scenario: tuple[list[CurrentImage], list[ImageSpec], list[VariantCodes]],
) -> None:
    current, requested, variants = scenario
    after = apply(current, plan_product_sync(current, requested, variants))
    again = plan_product_sync(after, requested, variants)
    assert again.is_noop
    assert not again.creates


@given(variant_lists, specs)
def test_skip_applies_to_new_images_only(variants: list[VariantCodes], spec: ImageSpec) -> None:
    unmatched = ImageSpec(
        url=spec.url,
        sort=spec.sort,
        existance_key=spec.existance_key,
        attach_rule={"Color": "no-such-code"},
        skip_if_no_variant_matches=True,
    )
    fresh = plan_product_sync([], [unmatched], variants)
    assert [s.spec for s in fresh.skips] == [unmatched]
    assert not fresh.creates

    existing = CurrentImage("img-1", unmatched, frozenset())
    kept = plan_product_sync([existing], [unmatched], variants)
    assert [k.image_id for k in kept.keeps] == ["img-1"]
    assert not kept.deletes
    assert not kept.skips


def test_rules_match_every_pair_on_codes() -> None:
    variants = [
        VariantCodes(1, {"Color": "100", "Size": "XS"}),
        VariantCodes(2, {"Color": "100", "Size": "L"}),
        VariantCodes(3, {"Color": "900", "Size": "XS"}),
        VariantCodes(4, {"Color": None, "Size": "XS"}),
    ]
    assert matching_variants({"Color": "100"}, variants) == {1, 2}
    assert matching_variants({"Color": "100", "Size": "XS"}, variants) == {1}
    assert matching_variants({"Color": "500"}, variants) == frozenset()
    assert matching_variants(None, variants) == frozenset()
    assert matching_variants({}, variants) == frozenset()


def test_matched_by_existance_key_the_image_takes_the_new_url() -> None:
    old = ImageSpec(url="https://cdn/x.jpg?sig=old", sort=1, existance_key="x")
    new = ImageSpec(url="https://cdn/x.jpg?sig=new", sort=1, existance_key="x")
    plan = plan_product_sync([CurrentImage("img", old, frozenset())], [new], [])
    assert plan.keeps[0].changed
    assert plan.keeps[0].spec.url == "https://cdn/x.jpg?sig=new"
    assert not plan.creates


@st.composite
def resends(draw: st.DrawFn) -> tuple[list[CurrentImage], list[ImageSpec], list[VariantCodes]]:
    """A product's images as stored (links = each rule on its variants), and a request
    that sends them again: in any order, as they are or with one image changed, dropped
    or added, or another list altogether."""
    variants = draw(variant_lists)
    previous = [
        dataclasses.replace(spec, skip_if_no_variant_matches=False) for spec in draw(requests)
    ]
    current = [
        CurrentImage(f"old-{i}", spec, matching_variants(spec.attach_rule, variants))
        for i, spec in enumerate(previous)
    ]
    requested = list(draw(st.permutations(previous)))
    change = draw(st.sampled_from(["none", "none", "replace", "drop", "add", "other"]))
    if change == "replace" and requested:
        requested[draw(st.integers(0, len(requested) - 1))] = draw(specs)
    elif change == "drop" and requested:
        requested.pop(draw(st.integers(0, len(requested) - 1)))
    elif change == "add":
        requested.append(draw(specs))
    elif change == "other":
        requested = draw(requests)
    return current, unique_by_identity(requested), variants


@given(resends())
def test_unchanged_is_exactly_a_plan_that_neither_changes_nor_warns(
    scenario: tuple[list[CurrentImage], list[ImageSpec], list[VariantCodes]],
) -> None:
    """The submission's no-op check reads no variants: it tells the same as planning."""
    current, requested, variants = scenario
    stored = [StoredImage.of(i.image_id, i.spec, len(i.variant_ids)) for i in current]
    plan = plan_product_sync(current, requested, variants)
    ids = unchanged(stored, requested)
    event("unchanged" if ids is not None else "to plan")
    assert (ids is not None) == (plan.is_noop and not plan.warnings and not plan.skips)
    if ids is not None:
        assert ids == [k.image_id for k in sorted(plan.keeps, key=lambda k: k.index)]
