from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from imagesync.kit.schemas import Key, Name, RequestModel, storable

AttributeValueText = Annotated[
    str, StringConstraints(min_length=1, max_length=255), AfterValidator(storable)
]
Code = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(storable)]


# -- attributes ---------------------------------------------------------------------------


class AttributeValueIn(RequestModel):
    value: AttributeValueText
    code: Code | None = Field(default=None, description="The code image rules match on.")


class AttributeIn(RequestModel):
    name: Name
    values: list[AttributeValueIn] = Field(max_length=1000)


class AttributeSyncRequest(RequestModel):
    attributes: list[AttributeIn] = Field(min_length=1, max_length=100)


class AttributeValueRead(BaseModel):
    value: str
    code: str | None


class AttributeRead(BaseModel):
    name: str
    values: list[AttributeValueRead]


class AttributeList(BaseModel):
    attributes: list[AttributeRead]


class ChangeCounts(BaseModel):
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    not_found: int = 0


class AttributeSyncCounts(BaseModel):
    attributes: ChangeCounts
    values: ChangeCounts


class AttributeSyncResult(BaseModel):
    attributes: list[AttributeRead]
    counts: AttributeSyncCounts


# -- products -----------------------------------------------------------------------------


class VariantIn(RequestModel):
    sku: Key
    attributes: dict[Name, AttributeValueText] | None = Field(
        default=None,
        description='Attribute name -> value, e.g. {"Color": "Black"}. Replaces the '
        "variant's attributes; absent leaves them as they are.",
    )
    delete: bool = False


class ProductIn(RequestModel):
    item_number: Key
    name: Annotated[str, StringConstraints(max_length=255), AfterValidator(storable)] | None = None
    delete: bool = False
    variants: list[VariantIn] | None = Field(default=None, max_length=1000)


MAX_PRODUCTS_PER_SYNC = 100


class ProductSyncRequest(RequestModel):
    products: list[ProductIn] = Field(min_length=1, max_length=MAX_PRODUCTS_PER_SYNC)


Change = Literal["created", "updated", "unchanged", "deleted", "not_found"]


class VariantSyncOutcome(BaseModel):
    sku: str
    result: Change


class ProductSyncOutcome(BaseModel):
    item_number: str
    result: Change
    variants: list[VariantSyncOutcome]


class ProductSyncCounts(BaseModel):
    products: ChangeCounts
    variants: ChangeCounts


class ProductSyncResult(BaseModel):
    products: list[ProductSyncOutcome]
    counts: ProductSyncCounts


class VariantRead(BaseModel):
    sku: str
    attributes: dict[str, AttributeValueRead]
    images: list[str] = Field(default_factory=list, description="Ids of the images attached.")
    created_at: datetime
    updated_at: datetime
