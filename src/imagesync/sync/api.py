from __future__ import annotations

import asyncio
import os
import stat
import time
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Literal

import structlog
from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.responses import Response as RawResponse
from starlette.types import Receive, Scope, Send

from imagesync.catalog import products as catalog_products
from imagesync.catalog.deps import AccountDep
from imagesync.kit.db import session_scope, utcnow
from imagesync.kit.deps import ReadSessionDep, SessionDep, SettingsDep
from imagesync.kit.errors import ErrorResponse
from imagesync.kit.pagination import PageDep
from imagesync.kit.routes import StrictRoute
from imagesync.kit.schemas import INT32_MAX, Identifier, Key
from imagesync.storage.store import IMMUTABLE, BlobStore
from imagesync.sync import results
from imagesync.sync.core.filenames import content_disposition
from imagesync.sync.deps import FileUrlsDep, StoreDep, SyncContextDep
from imagesync.sync.intake import dry_run as planning
from imagesync.sync.intake import idempotency, submit
from imagesync.sync.reads import images, jobs
from imagesync.sync.reads.images import StoredFile
from imagesync.sync.schemas import (
    ImageList,
    ImageSyncRequest,
    ProductPage,
    ProductRead,
    SyncJobRead,
    SyncPlan,
)

ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorResponse, "description": "Not found"},
    422: {"model": ErrorResponse, "description": "Invalid request; one error per problem"},
}
MAX_WAIT_SECONDS = 60
# How long a client should wait before it reads an unfinished job again (`Retry-After`):
# a tenth of the job's age, from 1 s up to 10 s. A job that is taking long is read less
# often, so a thousand waiting clients cost the API little, and its end is seen late by at
# most a tenth of its run.
POLL_SECONDS = (1, 10)
UNFINISHED_HEADERS = {
    "Location": {
        "description": "The job, to read until it has finished",
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before reading the job again: a tenth of the "
        "job's age, from 1 up to 10",
        "schema": {"type": "integer"},
    },
}
JOB_PATH = "products/images/sync/{job_id}"  # after the base URL
log = structlog.get_logger(__name__)

router = APIRouter(responses=ERRORS, route_class=StrictRoute)
# Products with their images; included after the catalog's routes, since its path
# parameter would swallow theirs.
products_router = APIRouter(responses=ERRORS, route_class=StrictRoute)


@router.post(
    "/products/images/sync",
    tags=["images"],
    status_code=202,
    response_model=SyncJobRead | SyncPlan,
    responses={
        200: {
            "model": SyncJobRead | SyncPlan,
            "description": "The job finished (nothing to download, or within `wait`); with "
            "`dry_run=true`, the plan",
        },
        202: {"description": "The job is queued or running", "headers": UNFINISHED_HEADERS},
    },
)
async def sync_images(
    body: ImageSyncRequest,
    request: Request,
    response: Response,
    account: AccountDep,
    settings: SettingsDep,
    ctx: SyncContextDep,
    wait: Annotated[
        float,
        Query(ge=0, le=MAX_WAIT_SECONDS, description="Seconds to wait for the job to finish."),
    ] = 0,
    dry_run: Annotated[
        bool,
        Query(
            description="Answer 200 with what a sync would do now (the plan), validated as "
            "a sync is; nothing is downloaded, recorded or changed."
        ),
    ] = False,
    refresh: Annotated[
        Literal["changed"] | None,
        Query(
            description="`changed`: ask the origin of each known image of these products "
            "whether its bytes changed since they were downloaded (a conditional GET with "
            "the `ETag` and `Last-Modified` it sent), and replace those that did; the "
            'images keep their ids. As `"refresh": true` on every image. The job counts '
            "`refreshed` and `unchanged`."
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=idempotency.HEADER,
            min_length=1,
            max_length=255,
            description="Any unique string (a UUID) for this request, to send it again safely "
            "after a timeout: the same key with the same body answers with the job it "
            "recorded (with `Idempotent-Replayed: true`) and records nothing, for 24 hours "
            "(IMAGESYNC_IDEMPOTENCY_KEY_HOURS); with another body it is a 422 "
            "`idempotency_key_reused`. Keys are the account's own. Ignored by `dry_run`.",
        ),
    ] = None,
) -> SyncJobRead | SyncPlan | Response:
    """Sync the complete image list of up to 10 products; images left out are deleted."""
    if refresh == "changed":
        body = body.refreshing()
    if dry_run:
        response.status_code = 200
        async with session_scope(ctx.sessionmaker) as session:
            return await planning.plan(
                session,
                account,
                body,
                max_images=settings.max_images_per_product,
                allow=ctx.fetcher.allow,
                ports=ctx.fetcher.limits.ports,
            )
    # One transaction: the job, what needed no download (applied here) and the queued
    # rest commit together, or nothing is recorded. Sent again with its Idempotency-Key,
    # the request reads the job it recorded and writes nothing.
    async with session_scope(ctx.sessionmaker) as session:
        job_id = uuid.uuid4().hex
        lifetime = timedelta(hours=settings.idempotency_key_hours)
        earlier = None
        if idempotency_key is not None:
            earlier = await idempotency.claim(
                session, account.id, idempotency_key, body, job_id, lifetime=lifetime
            )
        if earlier is None:
            limit = settings.max_images_per_product
            job = await submit.submit(session, ctx, account, body, max_images=limit, job_id=job_id)
            answer = results.submitted_answer(job)
        else:
            answer = results.answer(await jobs.get_job(session, account, earlier))
            job_id = earlier
            response.headers["Idempotent-Replayed"] = "true"
    # As `url_for` would say it, without its search through every route.
    response.headers["Location"] = f"{request.base_url}{JOB_PATH.format(job_id=job_id)}"
    deadline = time.monotonic() + wait
    while answer.status in ("queued", "running") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        try:
            async with session_scope(ctx.reads) as session:
                answer = results.answer(await jobs.get_job(session, account, job_id))
        except Exception:  # the job is recorded: answer with what is known of it
            log.exception("sync.job.wait_failed", job=job_id)
            break
    status = 202 if _ask_to_poll(response, answer.status, answer.created_at) else 200
    return json_response(answer, status, response)


def json_response(answer: results.Answer, status: int, response: Response) -> Response:
    """The job's JSON as it was written once (`results.answer`): FastAPI neither validates
    nor serialises it again."""
    return Response(
        answer.body,
        status_code=status,
        headers=dict(response.headers),
        media_type="application/json",
    )


@router.get(
    "/" + JOB_PATH,
    tags=["images"],
    name="get_sync_job",
    response_model=SyncJobRead,
    responses={200: {"headers": {"Retry-After": UNFINISHED_HEADERS["Retry-After"]}}},
)
async def get_sync_job(
    job_id: Identifier, response: Response, session: ReadSessionDep, account: AccountDep
) -> Response:
    """An image sync job: its status and, per product, what happened to each image. While
    it is queued or running, `Retry-After` says when to read it again."""
    answer = results.answer(await jobs.get_job(session, account, job_id))
    _ask_to_poll(response, answer.status, answer.created_at)
    return json_response(answer, 200, response)


def _ask_to_poll(response: Response, status: str, created_at: datetime) -> bool:
    """Whether the job is unfinished; if so, `Retry-After` says when to read it again."""
    if status not in ("queued", "running"):
        return False
    low, high = POLL_SECONDS
    age = (utcnow() - created_at).total_seconds()
    response.headers["Retry-After"] = str(int(min(high, max(low, age // 10))))
    return True


@router.get("/products/{item_number:path}/images", tags=["images"])
async def list_product_images(
    item_number: Key,
    urls: FileUrlsDep,
    session: ReadSessionDep,
    account: AccountDep,
    page: PageDep,
    channel: Annotated[
        Literal["b2b", "b2c"] | None,
        Query(description="b2c orders by sort_b2c when the product uses B2C sorting"),
    ] = None,
) -> ImageList:
    """A product's images in sort order, with their variants and stored file, a page at
    a time (`page` from 0; `limit` 20 by default, at most 60; `meta` says how many)."""
    total, found = await images.list_images(
        session, account, item_number, channel=channel, urls=urls, page=page
    )
    return ImageList(images=found, meta=page.meta(total))


@router.get(
    "/images/{image_id}/w{width}/{filename}",
    tags=["images"],
    response_class=RawResponse,
    responses={200: {"content": {"image/webp": {}}, "description": "The rendition"}},
)
async def rendition_file(
    image_id: Identifier,
    width: Annotated[int, Path(ge=1, le=INT32_MAX)],
    filename: Key,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    v: VersionQuery = None,
) -> Response:
    """A WebP rendition of an image, once ready (see the image's `renditions`). A
    conditional request naming its `ETag` (`If-None-Match`) is answered 304."""
    found = await images.get_rendition_file(session, image_id, width, filename)
    return await stored_file(request, store, found, v)


@router.get(
    "/images/{image_id}/{filename}",
    tags=["images"],
    response_class=RawResponse,
    responses={200: {"content": {"image/*": {}}, "description": "The stored file"}},
)
async def image_file(
    image_id: Identifier,
    filename: Key,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    v: VersionQuery = None,
) -> RawResponse:
    """The stored bytes of an image, at an unguessable URL. Named by its `file_url`, with
    the version of the bytes (`v`), they never change and are cached for a year; without
    it (or with an older one: the image was refreshed), they are the image's bytes now,
    to be revalidated. A conditional request naming its `ETag` (`If-None-Match`) is
    answered 304."""
    found = await images.get_image_file(session, image_id, filename)
    return await stored_file(request, store, found, v)


@products_router.get("/products", tags=["products"])
async def list_products(
    urls: FileUrlsDep, session: ReadSessionDep, account: AccountDep, page: PageDep
) -> ProductPage:
    """List products by item number, a page at a time, with their images."""
    products, total = await catalog_products.list_products(
        session, account, offset=page.offset, limit=page.limit
    )
    found = await images.read_images(session, [p.id for p in products], urls)
    return ProductPage(
        products=[images.product_read(p, found.get(p.id, [])) for p in products],
        meta=page.meta(total),
    )


@products_router.get("/products/{item_number:path}", tags=["products"])
async def get_product(
    item_number: Key, urls: FileUrlsDep, session: ReadSessionDep, account: AccountDep
) -> ProductRead:
    """One product with its variants (each listing its images) and its images."""
    product = await catalog_products.get_product(session, account, item_number)
    found = await images.read_images(session, [product.id], urls)
    return images.product_read(product, found.get(product.id, []))


class LocalFile(FileResponse):
    """A stored file. One of at most 1 MiB (an original is several hundred KB, a
    rendition tens) is opened, measured and read in one trip to a thread and sent whole:
    Starlette's own way took four trips (stat, open, read, close) and a task group to
    listen for the client's disconnect, which cost the route more than half its CPU. A
    bigger file, a range, a HEAD, or a server that sends files itself (`pathsend`) are
    answered as Starlette does, in 1 MiB chunks."""

    chunk_size = 1024 * 1024

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        simple = (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and "http.response.pathsend" not in scope.get("extensions", {})
            and not any(name == b"range" for name, _ in scope["headers"])
        )
        read = await asyncio.to_thread(_read_whole, self.path, self.chunk_size) if simple else None
        if read is None:
            await super().__call__(scope, receive, send)
            return
        stat_result, content = read
        self.set_stat_headers(stat_result)
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": content})


def _read_whole(path: str | os.PathLike[str], limit: int) -> tuple[os.stat_result, bytes] | None:
    """In a thread: a regular file's status and bytes, if it holds at most `limit`; None
    otherwise (or if it is gone: the caller answers as Starlette would)."""
    try:
        with open(path, "rb") as file:
            status = os.fstat(file.fileno())
            if not stat.S_ISREG(status.st_mode) or status.st_size > limit:
                return None
            return status, file.read()
    except FileNotFoundError:
        return None


def holds(if_none_match: str | None, etag: str) -> bool:
    """Whether `If-None-Match` names `etag` (compared weakly, as RFC 9110 says) or is
    `*`."""
    if not if_none_match:
        return False
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in tags or etag in (tag.removeprefix("W/") for tag in tags)


VersionQuery = Annotated[
    str | None,
    Query(
        max_length=64,
        description="The version of the bytes, as `file_url` names it: the bytes of that "
        "version never change, and are cached for a year.",
    ),
]
# A file asked for without its version, or by an older one, may change (a refresh): a
# cache keeps it, but asks again (a 304 when it still holds the bytes).
REVALIDATE = "no-cache"


def file_headers(etag: str, filename: str, *, fixed: bool) -> dict[str, str]:
    """A version's bytes never change: cache them for a year (else revalidate them);
    never sniff their type."""
    return {
        "Cache-Control": IMMUTABLE if fixed else REVALIDATE,
        "ETag": f'"{etag}"',
        "Content-Disposition": content_disposition(filename),
        "X-Content-Type-Options": "nosniff",
    }


async def stored_file(
    request: Request, store: BlobStore, found: StoredFile, version: str | None
) -> Response:
    """304 when the client holds these bytes already (its `If-None-Match` names their
    ETag); else a local file sent by the server (with sendfile where it offers it), or a
    bucket's object streamed through. Cached for a year when `version` is the bytes'."""
    headers = file_headers(found.etag, found.filename, fixed=version == found.version)
    if holds(request.headers.get("if-none-match"), headers["ETag"]):
        kept = ("Cache-Control", "ETag")  # what a 200 would have said of caching
        return Response(status_code=304, headers={k: headers[k] for k in kept})
    path = store.local_path(found.key)
    media_type = found.content_type
    if path is not None:
        return LocalFile(path, media_type=media_type, headers=headers)
    return StreamingResponse(await store.open(found.key), media_type=media_type, headers=headers)
