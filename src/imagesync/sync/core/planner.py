"""The pure core of a product's image sync: current images + requested images + the
product's variants -> a plan (create / keep / update / skip / delete).

No I/O here; the worker decides which creates need a download and applies the plan.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

IdentityKind = Literal["url", "existance_key"]


@dataclass(frozen=True, order=True)
class Identity:
    """What makes an image "seen before": its `existance_key` if given, else its URL."""

    kind: IdentityKind
    value: str

    @cached_property
    def digest(self) -> str:
        """The key the "seen before" memory is looked up by (URLs may be too long to index)."""
        return hashlib.sha256(f"{self.kind}\0{self.value}".encode()).hexdigest()


def identity_of(url: str, existance_key: str | None) -> Identity:
    if existance_key is not None:
        return Identity("existance_key", existance_key)
    return Identity("url", url)


@dataclass(frozen=True)
class ImageSpec:
    """An image as the request describes it."""

    url: str
    sort: int
    sort_b2c: int | None = None
    existance_key: str | None = None
    alt: str | None = None
    filename: str | None = None
    attach_rule: Mapping[str, str] | None = None
    skip_if_no_variant_matches: bool = False
    # Ask the origin whether a known identity's bytes changed (not metadata: not stored).
    refresh: bool = False

    @cached_property
    def identity(self) -> Identity:
        """Made once per spec (a plan and the no-op check look it up several times)."""
        return identity_of(self.url, self.existance_key)


@dataclass(frozen=True)
class CurrentImage:
    """An image the product has now."""

    image_id: str
    spec: ImageSpec
    variant_ids: frozenset[int]


@dataclass(frozen=True)
class VariantCodes:
    """A variant and its attribute codes by attribute name (a value may have no code)."""

    variant_id: int
    codes: Mapping[str, str | None]


def matching_variants(
    rule: Mapping[str, str] | None, variants: Sequence[VariantCodes]
) -> frozenset[int]:
    """The variants whose codes match every pair of the rule. No rule (or an empty one)
    attaches the image to the product only."""
    if not rule:
        return frozenset()
    return frozenset(
        v.variant_id
        for v in variants
        if all(v.codes.get(name) == code for name, code in rule.items())
    )


@dataclass(frozen=True)
class RuleWarning:
    """An image whose attach rule matched no variant of its product: it is attached to
    the product only. Not an error (TRAEDE accepts it), but never silent. Its codes are
    `codes.WARNING_CODES`."""

    code: str
    detail: str


def rule_warning(
    rule: Mapping[str, str] | None, variants: Sequence[VariantCodes]
) -> RuleWarning | None:
    """Why a non-empty rule matches none of the product's `variants`, or None when it
    matches one (or there is no rule)."""
    if not rule or matching_variants(rule, variants):
        return None
    only = "the image is attached to the product only"
    if not variants:
        return RuleWarning("rule_matches_no_variant", f"the product has no variants; {only}")
    names = sorted({n for v in variants for n in v.codes})
    for name, code in rule.items():
        if name not in names:
            have = ", ".join(names) or "none"
            return RuleWarning(
                "unknown_attribute",
                f"no variant of this product has an attribute {name!r} (they have: {have}); "
                + only,
            )
        codes = sorted({c for v in variants if (c := v.codes.get(name)) is not None})
        if code not in codes:
            have = ", ".join(codes) or "none"
            return RuleWarning(
                "unknown_attribute_code",
                f"no variant of this product has {name} code {code!r} (their codes: {have}); "
                + only,
            )
    pairs = ", ".join(f"{name}={code}" for name, code in rule.items())
    return RuleWarning(
        "rule_matches_no_variant", f"no variant of this product has all of {pairs}; {only}"
    )


@dataclass(frozen=True)
class Create:
    index: int  # position in the request
    spec: ImageSpec
    variant_ids: frozenset[int]


@dataclass(frozen=True)
class Keep:
    index: int
    image_id: str
    spec: ImageSpec
    variant_ids: frozenset[int]
    changed: bool  # metadata or variant links differ from the current image


@dataclass(frozen=True)
class Skip:
    index: int
    spec: ImageSpec


@dataclass(frozen=True)
class ProductPlan:
    creates: tuple[Create, ...] = ()
    keeps: tuple[Keep, ...] = ()
    skips: tuple[Skip, ...] = ()
    deletes: tuple[str, ...] = ()  # image ids
    use_sort_b2c: bool | None = None  # None: leave as it is
    notes: tuple[str, ...] = field(default=())
    # By position in the request: the images attached, whose rule matched no variant.
    warnings: Mapping[int, RuleWarning] = field(default_factory=dict)

    @property
    def is_noop(self) -> bool:
        return not (self.creates or self.deletes or any(k.changed for k in self.keeps))


def plan_product_sync(
    current: Sequence[CurrentImage],
    requested: Sequence[ImageSpec],
    variants: Sequence[VariantCodes],
    *,
    use_sort_b2c: bool | None = None,
) -> ProductPlan:
    """Plan the product's image set to become exactly `requested`.

    - A requested identity the product has is kept and takes the request's metadata
      (and, matched by `existance_key`, its new URL); its file is never downloaded again.
    - A new identity is created, unless its `skip_if_no_variant_matches` is set and no
      variant matches its rule; that skip never deletes an existing image.
    - Every current image whose identity is not requested is deleted.
    Identities within `requested` are unique (the request is validated before planning).
    """
    by_identity = {image.spec.identity: image for image in current}
    creates: list[Create] = []
    keeps: list[Keep] = []
    skips: list[Skip] = []
    wanted: set[Identity] = set()
    warnings: dict[int, RuleWarning] = {}
    for index, spec in enumerate(requested):
        variant_ids = matching_variants(spec.attach_rule, variants)
        existing = by_identity.get(spec.identity)
        if existing is not None:
            wanted.add(spec.identity)
            changed = (
                _metadata(existing.spec) != _metadata(spec) or existing.variant_ids != variant_ids
            )
            keeps.append(Keep(index, existing.image_id, spec, variant_ids, changed))
        elif spec.skip_if_no_variant_matches and spec.attach_rule and not variant_ids:
            skips.append(Skip(index, spec))
            continue  # skipped, as it asked: no warning
        else:
            creates.append(Create(index, spec, variant_ids))
        if not variant_ids and (warning := rule_warning(spec.attach_rule, variants)):
            warnings[index] = warning
    deletes = tuple(image.image_id for image in current if image.spec.identity not in wanted)
    return ProductPlan(
        tuple(creates), tuple(keeps), tuple(skips), deletes, use_sort_b2c, warnings=warnings
    )


Metadata = tuple[object, ...]


@dataclass(frozen=True, slots=True)
class StoredImage:
    """An image as the no-op check reads it: its metadata (as `metadata` makes it, which
    holds its identity) and no variant ids, only how many it is linked to (links are
    kept equal to its rule evaluated on the product's variants)."""

    image_id: str
    metadata: Metadata
    links: int

    @classmethod
    def of(cls, image_id: str, spec: ImageSpec, links: int) -> StoredImage:
        return cls(image_id, _metadata(spec), links)


def unchanged(current: Sequence[StoredImage], requested: Sequence[ImageSpec]) -> list[str] | None:
    """The image ids, by position in `requested`, when the request changes nothing: the
    same images with the same metadata, and every rule attaching the image to some
    variant. None when the product must be planned (`plan_product_sync` would create,
    update, delete, skip or warn).

    Metadata holds the URL and the `existance_key`, so equal metadata is the same
    identity; a product's images, and a request's, each have distinct identities, so
    as many requested as stored, each found by its metadata, are the same images.

    This needs no variants: an image's links are its rule evaluated on the product's
    variants, re-evaluated whenever they change, so a rule with links matches and one
    without would warn."""
    if len(current) != len(requested):
        return None
    by_metadata = {image.metadata: image for image in current}
    ids = []
    for spec in requested:
        image = by_metadata.get(_metadata(spec))
        if image is None or (image.links > 0) != bool(spec.attach_rule):
            return None  # changed; or it would warn, or its links are to heal
        ids.append(image.image_id)
    return ids


def metadata(
    url: str,
    sort: int,
    sort_b2c: int | None,
    existance_key: str | None,
    alt: str | None,
    filename: str | None,
    attach_rule: Mapping[str, str] | None,
) -> Metadata:
    """What of an image a request sets, besides its bytes, comparable as a whole."""
    rule = tuple(sorted(attach_rule.items())) if attach_rule else None
    return (url, sort, sort_b2c, existance_key, alt, filename, rule)


def _metadata(spec: ImageSpec) -> Metadata:
    return metadata(
        spec.url,
        spec.sort,
        spec.sort_b2c,
        spec.existance_key,
        spec.alt,
        spec.filename,
        spec.attach_rule,
    )
