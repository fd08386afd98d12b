"""A typed client of the imagesync API, async (`AsyncClient`) and blocking (`Client`).

    async with AsyncClient("http://127.0.0.1:8000", token) as api:
        plan = await api.plan_images(products)          # what would happen; up to 10
        job = await api.sync_images(products)           # the job
        job = await api.wait_for_job(job)               # polls, honouring Retry-After

    event = verify_webhook(secret, request.headers, body)  # in a webhook receiver

Every call answers a schema of the API (the same classes the server uses). An error
answer raises `ApiError` (or a subclass by status) carrying TRAEDE's error objects. 429,
5xx and connection errors are retried with capped, jittered backoff that honours
`Retry-After`; every call is safe to repeat: a sync is idempotent, and each carries an
`Idempotency-Key`, so a retried one records no second job.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Annotated, Any, Self, TypeVar

import httpx
from pydantic import BaseModel, Field, TypeAdapter

from imagesync.catalog.schemas import (
    AttributeList,
    AttributeSyncResult,
    ProductSyncResult,
)
from imagesync.kit.errors import ErrorObject
from imagesync.kit.schemas import PageMeta
from imagesync.sync.schemas import (
    MAX_PRODUCTS_PER_IMAGE_SYNC,
    ImageList,
    ImageRead,
    ProductImagesIn,
    ProductPage,
    ProductRead,
    SyncJobRead,
    SyncPlan,
)
from imagesync.sync.webhooks.schemas import (
    DeliveryPage,
    JobFinished,
    ProductFailed,
    WebhookCreated,
)
from imagesync.sync.webhooks.signing import InvalidSignature as InvalidSignature
from imagesync.sync.webhooks.signing import verify

Model = TypeVar("Model", bound=BaseModel)
T = TypeVar("T")
UNFINISHED = ("queued", "running")
IMAGES_PAGE = 60  # the most a page of a product's images holds
RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class ApiError(Exception):
    """The API answered with an error; `errors` are its TRAEDE error objects."""

    def __init__(self, status: int, errors: list[ErrorObject]) -> None:
        self.status = status
        self.errors = errors
        first = errors[0] if errors else None
        summary = f"{first.code}: {first.detail}" if first else "no error body"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"HTTP {status}: {summary}{more}")


class InvalidRequest(ApiError):
    """400, 413, 415 or 422: the request must change before it can succeed."""


class Unauthorized(ApiError):
    """401: the token is missing, unknown or revoked."""


class NotFound(ApiError):
    """404."""


class Unavailable(ApiError):
    """429 or 5xx, still so after the retries."""


class ConnectionFailed(Exception):
    """The server could not be reached, still so after the retries."""

    @property
    def reason(self) -> str:
        """Why, in a few words: "connection refused", "timed out", "name not known"."""
        seen: BaseException | None = self.__cause__
        while seen is not None:
            if isinstance(seen, httpx.TimeoutException | TimeoutError):
                return "timed out"
            if isinstance(seen, OSError) and seen.errno:
                return os.strerror(seen.errno).lower()
            if isinstance(seen, OSError) and seen.strerror:
                return seen.strerror.lower()
            seen = seen.__cause__ or seen.__context__
        cause = self.__cause__
        return str(cause) or type(cause).__name__ if cause is not None else str(self)


def chunks(items: Sequence[T], size: int = MAX_PRODUCTS_PER_IMAGE_SYNC) -> Iterator[list[T]]:
    """`items` in lists of at most `size` (ten products: the API's limit per sync)."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class AsyncClient:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        max_backoff: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "User-Agent": "imagesync-client"},
            timeout=timeout,
            transport=transport,
        )
        self.retries = retries
        self.max_backoff = max_backoff

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- image sync ------------------------------------------------------------------------

    async def sync_images(
        self,
        products: Sequence[ProductImagesIn | Mapping[str, Any]],
        *,
        wait: float = 0,
        refresh: bool = False,
    ) -> SyncJobRead:
        """Sync the complete image lists of up to 10 products: the job, finished or to be
        waited for with `wait_for_job` (`wait`: seconds the server may hold the answer
        until it finishes, at most 60). The request carries an `Idempotency-Key` of its
        own, so a retry after a timeout or a lost answer records no second job. `refresh`
        asks the origin of each known image whether its bytes changed
        (`?refresh=changed`)."""
        params: dict[str, str | float] = {"wait": wait} if wait else {}
        if refresh:
            params["refresh"] = "changed"
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        response = await self._send(
            "POST", "/products/images/sync", json=_body(products), params=params, headers=headers
        )
        return SyncJobRead.model_validate(response.json())

    async def plan_images(
        self, products: Sequence[ProductImagesIn | Mapping[str, Any]], *, refresh: bool = False
    ) -> SyncPlan:
        """What `sync_images` would do now (`?dry_run=true`); changes nothing."""
        params = {"dry_run": "true"} | ({"refresh": "changed"} if refresh else {})
        response = await self._send(
            "POST", "/products/images/sync", json=_body(products), params=params
        )
        return SyncPlan.model_validate(response.json())

    async def get_job(self, job_id: str) -> SyncJobRead:
        return (await self._read_job(job_id))[0]

    async def wait_for_job(self, job: SyncJobRead, *, timeout: float | None = None) -> SyncJobRead:
        """Read the job until it has finished (or `timeout` seconds have passed), as often
        as its `Retry-After` asks."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pause = 1.0
        while job.status in UNFINISHED:
            if deadline is not None:
                if loop.time() >= deadline:
                    return job
                pause = min(pause, max(0.0, deadline - loop.time()))
            await asyncio.sleep(pause)
            job, asked = await self._read_job(job.id)
            pause = asked or pause
        return job

    async def _read_job(self, job_id: str) -> tuple[SyncJobRead, float | None]:
        response = await self._send("GET", f"/products/images/sync/{job_id}")
        retry_after = response.headers.get("Retry-After", "")
        asked = float(retry_after) if retry_after.isdigit() else None
        return SyncJobRead.model_validate(response.json()), asked

    async def product_images(self, item_number: str, *, channel: str | None = None) -> ImageList:
        """All the product's images, read a page of 60 at a time."""
        params: dict[str, str | int] = {
            "limit": IMAGES_PAGE,
            **({"channel": channel} if channel else {}),
        }
        found: list[ImageRead] = []
        page = 0
        while True:
            response = await self._send(
                "GET", f"/products/{item_number}/images", params={**params, "page": page}
            )
            read = ImageList.model_validate(response.json())
            found += read.images
            page += 1
            if page >= read.meta.pages:
                total = read.meta.total
                meta = PageMeta(page=0, limit=max(total, 1), total=total, pages=1 if total else 0)
                return ImageList(images=found, meta=meta)

    # -- catalog ---------------------------------------------------------------------------

    async def sync_attributes(self, attributes: Sequence[Mapping[str, Any]]) -> AttributeSyncResult:
        response = await self._send("POST", "/attributes/sync", json={"attributes": attributes})
        return AttributeSyncResult.model_validate(response.json())

    async def attributes(self) -> AttributeList:
        return AttributeList.model_validate((await self._send("GET", "/attributes")).json())

    async def sync_products(self, products: Sequence[Mapping[str, Any]]) -> ProductSyncResult:
        response = await self._send("POST", "/products/sync", json={"products": products})
        return ProductSyncResult.model_validate(response.json())

    async def products(self, *, page: int = 0, limit: int = 20) -> ProductPage:
        response = await self._send("GET", "/products", params={"page": page, "limit": limit})
        return ProductPage.model_validate(response.json())

    async def product(self, item_number: str) -> ProductRead:
        return ProductRead.model_validate(
            (await self._send("GET", f"/products/{item_number}")).json()
        )

    # -- webhooks --------------------------------------------------------------------------

    async def create_webhook(self, url: str, events: Sequence[str]) -> WebhookCreated:
        """Register an endpoint; keep the answer's `secret` (it is shown only here)."""
        response = await self._send("POST", "/webhooks", json={"url": url, "events": events})
        return WebhookCreated.model_validate(response.json())

    async def webhook_deliveries(
        self, webhook_id: str, *, page: int = 0, limit: int = 20
    ) -> DeliveryPage:
        response = await self._send(
            "GET", f"/webhooks/{webhook_id}/deliveries", params={"page": page, "limit": limit}
        )
        return DeliveryPage.model_validate(response.json())

    # -- transport -------------------------------------------------------------------------

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt >= self.retries:
                    raise ConnectionFailed(f"{method} {path}: {exc!r}") from exc
                await asyncio.sleep(self.backoff(attempt, None))
                attempt += 1
                continue
            if response.status_code < 400:
                return response
            if response.status_code in RETRIED_STATUSES and attempt < self.retries:
                await asyncio.sleep(self.backoff(attempt, response.headers.get("Retry-After")))
                attempt += 1
                continue
            raise _error(response)

    def backoff(self, attempt: int, retry_after: str | None) -> float:
        """Retry-After when the server gives one (capped), else exponential with jitter."""
        if retry_after is not None:
            try:
                return min(self.max_backoff, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: fall back to the backoff
        return min(self.max_backoff, 0.5 * 2.0**attempt) * random.uniform(0.5, 1.0)


class Client:
    """The blocking twin of `AsyncClient`: the same calls, each run to its end (not for use
    inside a running event loop)."""

    def __init__(self, url: str, token: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._async = self._run(_make(url, token, options))

    def _run(self, call: Any) -> Any:
        return self._loop.run_until_complete(call)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._run(self._async.aclose())
        self._loop.close()

    def sync_images(
        self,
        products: Sequence[ProductImagesIn | Mapping[str, Any]],
        *,
        wait: float = 0,
        refresh: bool = False,
    ) -> SyncJobRead:
        job: SyncJobRead = self._run(self._async.sync_images(products, wait=wait, refresh=refresh))
        return job

    def plan_images(
        self, products: Sequence[ProductImagesIn | Mapping[str, Any]], *, refresh: bool = False
    ) -> SyncPlan:
        plan: SyncPlan = self._run(self._async.plan_images(products, refresh=refresh))
        return plan

    def get_job(self, job_id: str) -> SyncJobRead:
        job: SyncJobRead = self._run(self._async.get_job(job_id))
        return job

    def wait_for_job(self, job: SyncJobRead, *, timeout: float | None = None) -> SyncJobRead:
        done: SyncJobRead = self._run(self._async.wait_for_job(job, timeout=timeout))
        return done

    def product_images(self, item_number: str, *, channel: str | None = None) -> ImageList:
        images: ImageList = self._run(self._async.product_images(item_number, channel=channel))
        return images

    def sync_attributes(self, attributes: Sequence[Mapping[str, Any]]) -> AttributeSyncResult:
        result: AttributeSyncResult = self._run(self._async.sync_attributes(attributes))
        return result

    def attributes(self) -> AttributeList:
        found: AttributeList = self._run(self._async.attributes())
        return found

    def sync_products(self, products: Sequence[Mapping[str, Any]]) -> ProductSyncResult:
        result: ProductSyncResult = self._run(self._async.sync_products(products))
        return result

    def products(self, *, page: int = 0, limit: int = 20) -> ProductPage:
        found: ProductPage = self._run(self._async.products(page=page, limit=limit))
        return found

    def product(self, item_number: str) -> ProductRead:
        found: ProductRead = self._run(self._async.product(item_number))
        return found

    def create_webhook(self, url: str, events: Sequence[str]) -> WebhookCreated:
        created: WebhookCreated = self._run(self._async.create_webhook(url, events))
        return created

    def webhook_deliveries(
        self, webhook_id: str, *, page: int = 0, limit: int = 20
    ) -> DeliveryPage:
        found: DeliveryPage = self._run(
            self._async.webhook_deliveries(webhook_id, page=page, limit=limit)
        )
        return found


WebhookEvent = JobFinished | ProductFailed
_EVENT = TypeAdapter[WebhookEvent](Annotated[WebhookEvent, Field(discriminator="type")])


def verify_webhook(secret: str, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
    """The event a webhook call carries, once its signature is checked against the
    endpoint's `secret` (Standard Webhooks; raises `InvalidSignature` if it does not
    match or is more than 5 minutes old). `body` is the raw bytes received, unparsed."""
    verify(secret, headers, body)
    return _EVENT.validate_json(body)


async def _make(url: str, token: str, options: dict[str, Any]) -> AsyncClient:
    return AsyncClient(url, token, **options)  # made on the loop that will use it


def _body(products: Sequence[ProductImagesIn | Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "products": [
            p.model_dump(mode="json", exclude_none=True) if isinstance(p, BaseModel) else p
            for p in products
        ]
    }


def _error(response: httpx.Response) -> ApiError:
    try:
        errors = [ErrorObject.model_validate(e) for e in response.json()["errors"]]
    except (ValueError, KeyError, TypeError):
        errors = [
            ErrorObject(
                status=response.status_code,
                code="http_error",
                title=response.reason_phrase,
                detail=response.text[:300],
            )
        ]
    status = response.status_code
    if status in RETRIED_STATUSES or status >= 500:
        return Unavailable(status, errors)
    return _ERRORS.get(status, ApiError)(status, errors)


_ERRORS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    404: NotFound,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
}
