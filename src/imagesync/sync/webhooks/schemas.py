"""The webhook endpoints' requests and answers, and the body of each call."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from imagesync.fetch.guard import MAX_URL_LENGTH
from imagesync.kit.schemas import PageMeta, RequestModel, storable
from imagesync.sync.schemas import ProductResult, SyncJobRead

JOB_FINISHED: Literal["sync.job.finished"] = "sync.job.finished"
PRODUCT_FAILED: Literal["sync.product.failed"] = "sync.product.failed"
EventType = Literal["sync.job.finished", "sync.product.failed"]
EVENTS: tuple[EventType, ...] = (JOB_FINISHED, PRODUCT_FAILED)
MAX_WEBHOOKS = 10  # per account

WebhookUrl = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_URL_LENGTH), AfterValidator(storable)
]


def _distinct(events: list[EventType]) -> list[EventType]:
    return list(dict.fromkeys(events))


class WebhookCreate(RequestModel):
    url: WebhookUrl = Field(
        description="A public http(s) URL, checked as image URLs are (no private or "
        "special address unless an operator allowed it); redirects are not followed."
    )
    events: Annotated[list[EventType], AfterValidator(_distinct)] = Field(
        min_length=1,
        description="`sync.job.finished`: a job's every product has ended. "
        "`sync.product.failed`: a product of a job ended `failed`.",
    )


class WebhookChange(RequestModel):
    enabled: bool = Field(
        description="`true` enables a disabled endpoint again (deliveries that gave up "
        "are not sent again); `false` disables it."
    )


class WebhookRead(BaseModel):
    id: str
    url: str
    events: list[EventType]
    enabled: bool
    disabled_at: datetime | None = Field(
        description="When a delivery still failed after its last retry, or the account disabled it."
    )
    disabled_reason: str | None
    created_at: datetime


class WebhookCreated(WebhookRead):
    secret: str = Field(
        description="Signs every call (`whsec_` and base64, see Standard Webhooks). Shown "
        "only now: keep it."
    )


class WebhookList(BaseModel):
    webhooks: list[WebhookRead]


DeliveryStatus = Literal["pending", "delivered", "failed"]


class DeliveryAttempt(BaseModel):
    at: datetime
    status: int | None = Field(description="The endpoint's HTTP status; none if it gave none.")
    error: str | None = Field(description="Why no 2xx came: the answer or the connection.")
    milliseconds: int


class DeliveryRead(BaseModel):
    id: str = Field(description="The `webhook-id` of each of its calls.")
    event: EventType
    job_id: str
    status: DeliveryStatus
    reason: str | None = Field(
        description="Why it failed: no 2xx answer by its last attempt, or its endpoint "
        "was disabled before it."
    )
    created_at: datetime
    next_attempt_at: datetime | None
    attempts: list[DeliveryAttempt]


class DeliveryPage(BaseModel):
    deliveries: list[DeliveryRead]
    meta: PageMeta


class JobFinished(BaseModel):
    """The body of a `sync.job.finished` call."""

    type: Literal["sync.job.finished"] = JOB_FINISHED
    timestamp: datetime
    data: SyncJobRead


class ProductFailedData(BaseModel):
    job_id: str
    product: ProductResult


class ProductFailed(BaseModel):
    """The body of a `sync.product.failed` call."""

    type: Literal["sync.product.failed"] = PRODUCT_FAILED
    timestamp: datetime
    data: ProductFailedData


def attempt_record(
    at: datetime, status: int | None, error: str | None, milliseconds: int
) -> dict[str, Any]:
    return DeliveryAttempt(at=at, status=status, error=error, milliseconds=milliseconds).model_dump(
        mode="json"
    )
