"""TRAEDE's "Sync product images" contract and the job it answers with."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from imagesync.catalog.schemas import VariantRead
from imagesync.fetch.errors import InvalidUrl
from imagesync.fetch.guard import MAX_URL_LENGTH, parse_url
from imagesync.kit.schemas import Int32, Key, Name, PageMeta, RequestModel, storable
from imagesync.sync.core import codes
from imagesync.sync.examples import TRAEDE_EXAMPLE

MAX_PRODUCTS_PER_IMAGE_SYNC = 10


Url = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_URL_LENGTH), AfterValidator(storable)
]
ExistanceKey = Annotated[
    str, StringConstraints(min_length=1, max_length=1024), AfterValidator(storable)
]
Alt = Annotated[str, StringConstraints(max_length=1000), AfterValidator(storable)]
Filename = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(storable)]


class ImageIn(RequestModel):
    url: Url = Field(
        description="A public http(s) URL of the image, without credentials, at most "
        f"{MAX_URL_LENGTH} characters."
    )
    sort: Int32 = Field(description="The image's place among the product's images.")
    sort_b2c: Int32 | None = Field(default=None, description="A sort for B2C systems.")
    existance_key: ExistanceKey | None = Field(
        default=None,
        validation_alias=AliasChoices("existance_key", "existence_key"),
        description="Identifies the image instead of its URL, for URLs that expire.",
    )
    alt: Alt | None = None
    filename: Filename | None = Field(
        default=None,
        description="The name the file is served under (default: the URL's last segment). "
        "Letters and digits of any script are kept (NFC); other characters become '-', and "
        "the extension follows the image's real format.",
    )
    attach_to_variants_matching_attribute_code: dict[Name, Key] | None = Field(
        default=None, description='Attach to variants with these codes, e.g. {"Color": "100"}.'
    )
    skip_if_no_variant_matches_attribute_code: bool = Field(
        default=False, description="Do not create a new image that matches no variant."
    )
    refresh: bool = Field(
        default=False,
        description="Ask the image's origin whether its bytes changed since they were "
        "downloaded (a conditional GET with the `ETag` and `Last-Modified` it sent); new "
        "bytes replace the image's file and renditions, and the image keeps its id. A URL "
        "is otherwise never downloaded again. `?refresh=changed` asks it for every image.",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        if isinstance(data, dict) and "existance_key" in data and "existence_key" in data:
            raise ValueError("give existance_key or existence_key, not both")
        return data

    @field_validator("url")
    @classmethod
    def _fetchable(cls, url: str) -> str:
        """Everything about the URL that needs no network is checked here, at request
        time; only what needs DNS or a connection can fail inside the job."""
        try:
            parse_url(url)
        except InvalidUrl as exc:
            raise ValueError(exc.detail) from None
        return url


class ProductImagesIn(RequestModel):
    item_number: Key
    use_sort_b2c: bool | None = Field(default=None, description="Absent leaves it unchanged.")
    images: list[ImageIn] = Field(description="ALL the product's images; omitted ones are deleted.")


def _one_of_two_names(schema: dict[str, Any]) -> None:
    """The request as two named alternatives, each with its one list: documentation
    tools then show "products" or "product_images" (not "ImageSyncRequest /
    ImageSyncRequest"), and their samples carry one list, not both."""
    properties = schema.pop("properties")
    schema.pop("type", None)
    schema.pop("additionalProperties", None)
    alternatives = {
        "products": "products",
        "product_images": "product_images (the same, by TRAEDE's other name)",
    }
    schema["oneOf"] = [
        {
            "title": title,
            "type": "object",
            "properties": {key: properties[key]["anyOf"][0]},
            "required": [key],
            "additionalProperties": False,
        }
        for key, title in alternatives.items()
    ]
    schema["examples"] = [TRAEDE_EXAMPLE]


class ImageSyncRequest(RequestModel):
    """TRAEDE documents the list both as `products` and as `product_images`; send exactly
    one of them."""

    model_config = ConfigDict(json_schema_extra=lambda schema: _one_of_two_names(schema))

    products: list[ProductImagesIn] | None = Field(
        default=None, min_length=1, max_length=MAX_PRODUCTS_PER_IMAGE_SYNC
    )
    product_images: list[ProductImagesIn] | None = Field(
        default=None, min_length=1, max_length=MAX_PRODUCTS_PER_IMAGE_SYNC
    )

    @model_validator(mode="after")
    def _exactly_one_list(self) -> ImageSyncRequest:
        if (self.products is None) == (self.product_images is None):
            raise ValueError(
                "send the products under exactly one of `products` or `product_images`"
            )
        return self

    @property
    def key(self) -> str:
        return "products" if self.products is not None else "product_images"

    @property
    def items(self) -> list[ProductImagesIn]:
        return self.products if self.products is not None else self.product_images or []

    def refreshing(self) -> ImageSyncRequest:
        """The request with each of its images asking to be refreshed (`?refresh=changed`)."""
        items = [
            product.model_copy(
                update={"images": [i.model_copy(update={"refresh": True}) for i in product.images]}
            )
            for product in self.items
        ]
        return self.model_copy(update={self.key: items})


# A finished job of TRAEDE's example, one of whose images could not be fetched.

JobStatus = Literal["queued", "running", "succeeded", "partially_failed", "failed"]
ProductStatus = Literal["queued", "running", "succeeded", "failed", "superseded"]
Outcome = Literal["created", "kept", "updated", "skipped", "failed", "not_applied"]


class ImageError(BaseModel):
    code: str = Field(
        description="Why the image or product failed:\n" + codes.describe(),
        json_schema_extra={"enum": list(codes.RESULT_CODES)},
    )
    detail: str


class ImageWarning(BaseModel):
    code: str = Field(
        description="Why the image was applied but not as its rule meant: attached to the "
        "product only, since its `attach_to_variants_matching_attribute_code` matched no "
        "variant:\n" + codes.describe_warnings(),
        json_schema_extra={"enum": list(codes.WARNING_CODES)},
    )
    detail: str


# What the origin of an image asked to be refreshed said: new bytes, or the same.
Refresh = Literal["refreshed", "unchanged"]


class ImageResult(BaseModel):
    url: str
    existance_key: str | None
    outcome: Outcome
    image_id: str | None = None
    error: ImageError | None = None
    warnings: list[ImageWarning] = Field(
        default_factory=list,
        description="Not errors: the image was applied. Its rule matched no variant.",
    )
    refresh: Refresh | None = Field(
        default=None,
        description="Asked to be refreshed: whether its origin had new bytes, which replaced "
        "the image's file (`refreshed`, the image `updated`), or still the same "
        "(`unchanged`). Absent when it was not asked.",
    )


class SyncCounts(BaseModel):
    created: int = 0
    kept: int = 0
    updated: int = 0
    deleted: int = 0
    skipped: int = 0
    failed: int = 0
    downloaded: int = 0
    refreshed: int = Field(
        default=0, description="Images asked to be refreshed whose origin had new bytes."
    )
    unchanged: int = Field(
        default=0, description="Images asked to be refreshed whose origin's bytes had not changed."
    )


class ProductResult(BaseModel):
    item_number: str
    status: ProductStatus
    error: ImageError | None = None
    counts: SyncCounts = Field(default_factory=SyncCounts)
    images: list[ImageResult] = Field(default_factory=list)

    def failure_codes(self) -> list[str]:
        """The codes that failed it: each failed image's, else the product's own."""
        codes = [image.error.code for image in self.images if image.error is not None]
        return codes or ([self.error.code] if self.error is not None else [])


class SyncJobRead(BaseModel):
    id: str
    status: JobStatus
    created_at: datetime
    finished_at: datetime | None
    products: list[ProductResult]


PlannedAction = Literal["create", "keep", "update", "skip"]


class PlannedImage(BaseModel):
    """What a sync would do with one requested image."""

    url: str
    existance_key: str | None
    action: PlannedAction = Field(
        description="`create` a new image, `keep` one as it is, `update` one's metadata or "
        "variants, or `skip` it (`skip_if_no_variant_matches_attribute_code` and no match)."
    )
    image_id: str | None = Field(description="The image kept or updated.")
    variants: list[str] = Field(description="SKUs of the variants it would be attached to.")
    download: bool = Field(
        description="Whether it would be downloaded: a new identity the account has never "
        "seen. A known one reuses the stored file."
    )
    refresh: bool = Field(
        default=False,
        description="Whether its origin would be asked if its bytes changed (`refresh` on a "
        "known identity); whether they did is known only when the sync runs.",
    )
    warnings: list[ImageWarning] = Field(
        default_factory=list, description="Its rule would match no variant (not an error)."
    )


class PlannedDeletion(BaseModel):
    """A current image the request leaves out: a sync would delete it."""

    image_id: str
    url: str
    existance_key: str | None


class PlanCounts(BaseModel):
    create: int = 0
    keep: int = 0
    update: int = 0
    delete: int = 0
    skip: int = 0
    download: int = 0
    refresh: int = 0


class PlannedProduct(BaseModel):
    item_number: str
    status: Literal["planned", "failed"] = Field(
        description="`failed` when a sync of it would fail as a whole (see `error`)."
    )
    error: ImageError | None = None
    pending: bool = Field(
        default=False,
        description="An earlier sync of this product has not finished; the plan is made "
        "against its images as they are now.",
    )
    counts: PlanCounts = Field(default_factory=PlanCounts)
    images: list[PlannedImage] = Field(default_factory=list, description="In the request's order.")
    deletes: list[PlannedDeletion] = Field(default_factory=list)


class SyncPlan(BaseModel):
    """The answer to `?dry_run=true`: what a sync of this request would do now. Nothing
    was downloaded, recorded or changed."""

    dry_run: Literal[True] = True
    products: list[PlannedProduct]


class RenditionRead(BaseModel):
    """A WebP copy at one width, made after the sync: `pending` until it is."""

    width: int
    height: int | None
    state: Literal["pending", "ready", "failed"]
    content_type: str = "image/webp"
    size: int | None = Field(description="Bytes, once ready.")
    url: str | None = Field(description="Where to get it, once ready.")
    error: str | None = None


class ImageRead(BaseModel):
    id: str
    url: str
    existance_key: str | None
    sort: int
    sort_b2c: int | None
    alt: str | None
    filename: str
    variants: list[str]
    width: int
    height: int
    content_type: str
    size: int
    sha256: str
    file_url: str = Field(
        description="The stored bytes: this API's file route, or the bucket's (or CDN's) "
        "content-addressed key where the server sets IMAGESYNC_PUBLIC_BASE_URL. Its bytes "
        "never change."
    )
    renditions: list[RenditionRead] = Field(
        description="WebP copies at the configured widths narrower than the image."
    )
    created_at: datetime
    updated_at: datetime


class ImageList(BaseModel):
    images: list[ImageRead]
    meta: PageMeta


class ProductRead(BaseModel):
    item_number: str
    name: str | None
    use_sort_b2c: bool
    created_at: datetime
    updated_at: datetime
    variants: list[VariantRead]
    images: list[ImageRead] = Field(default_factory=list, description="In sort order.")


class ProductPage(BaseModel):
    products: list[ProductRead]
    meta: PageMeta
