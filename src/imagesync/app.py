"""The ASGI application: `create_app(settings)` wires routers, errors and resources."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import fastapi_offline
import structlog
from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from imagesync import __version__, health
from imagesync.catalog import api as catalog_api
from imagesync.catalog.auth import TokenCache
from imagesync.kit.docs_csp import DocsPolicy, serve_own_redoc_bundle
from imagesync.kit.errors import Conflict
from imagesync.kit.handlers import error_response, install_error_handlers
from imagesync.kit.limits import BodySizeLimit
from imagesync.kit.logging import configure_logging, redact_access_log
from imagesync.kit.metrics import RequestMetrics
from imagesync.kit.ratelimit import TokenRateLimit, limit_or_none
from imagesync.kit.settings import Settings, load_settings
from imagesync.runtime import (
    make_queue,
    metrics_server,
    open_context,
    runs_work,
    serve_connections,
    serving_work,
)
from imagesync.sync import api as sync_api
from imagesync.sync.examples import RESPONSE_EXAMPLES
from imagesync.sync.run.context import SyncContext
from imagesync.sync.webhooks import api as webhooks_api
from imagesync.web import pages as web_pages

log = structlog.get_logger(__name__)

# Swagger UI's and ReDoc's files, shipped with fastapi-offline.
OFFLINE_DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"

API_PREFIXES = ("", "/v10")  # TRAEDE's paths answer under /v10 too


def api_router() -> APIRouter:
    router = APIRouter()
    # Image routes first, product reads last: /products/{item_number:path} would swallow
    # .../images and /products/sync.
    router.include_router(sync_api.router)
    router.include_router(catalog_api.router)
    router.include_router(webhooks_api.router)
    # Reading a sync path is a wrong method there, not a product named "sync".
    for path in ("/products/sync", "/products/images/sync"):
        router.add_api_route(path, _post_only, methods=["GET"], include_in_schema=False)
    router.include_router(sync_api.products_router)
    return router


async def _post_only() -> None:
    raise StarletteHTTPException(405, headers={"Allow": "POST"})


@asynccontextmanager
async def served(settings: Settings, *, metrics_port: bool = True) -> AsyncIterator[SyncContext]:
    """What a process of `serve` holds while it runs: the resources of the work (its
    context), the queue's runner if this process runs the work, and the metrics port
    unless `metrics_port` is False (another process has it)."""
    queue = make_queue(settings, pool_size=settings.worker_concurrency + 4)
    own = settings if metrics_port else settings.model_copy(update={"metrics_port": 0})
    async with (
        open_context(settings, queue, connections=serve_connections(settings)) as ctx,
        serving_work(settings, ctx),
        metrics_server(
            own, cluster=partial(health.cluster_metrics, ctx.sessionmaker, settings), name="serve"
        ),
    ):
        yield ctx


def create_app(settings: Settings | None = None, *, metrics_port: bool = True) -> FastAPI:
    """The app; `metrics_port=False` leaves `IMAGESYNC_METRICS_PORT` to another process
    (the work process of `serve --workers N`)."""
    settings = settings or load_settings()
    configure_logging(settings.log_level, settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redact_access_log()  # after the server configured its loggers
        async with served(settings, metrics_port=metrics_port) as ctx:
            app.state.sync_context = ctx
            app.state.sessionmaker = ctx.sessionmaker
            app.state.read_sessionmaker = ctx.reads
            for limit in app.state.limits:
                limit.open(ctx.sessionmaker.kw["bind"])
            log.info(
                "app.started",
                database=ctx.sessionmaker.kw["bind"].url.render_as_string(hide_password=True),
                queue=settings.queue,
                runs_work=runs_work(settings),
            )
            yield
        log.info("app.stopped")

    # The interactive docs' assets are served from the installed package, never a CDN.
    app = FastAPIOffline(
        title="imagesync",
        version=__version__,
        summary="Keeps product images in sync with an external source (TRAEDE's API).",
        lifespan=lifespan,
        static_url="/docs/assets",
    )
    app.state.settings = settings
    app.state.token_cache = TokenCache(settings.token_cache_seconds)
    serve_own_redoc_bundle(app, "/docs/assets", OFFLINE_DOCS_ASSETS)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(DocsPolicy)
    # Outermost: a request over its token's limit costs nothing else.
    token_limit = limit_or_none("token", settings.rate_limit, settings.rate_counts_in)
    app.add_middleware(TokenRateLimit, limit=token_limit)
    app.state.sign_in_limit = limit_or_none(
        "sign-in", settings.sign_in_rate_limit, settings.rate_counts_in
    )
    app.state.limits = [x for x in (token_limit, app.state.sign_in_limit) if x is not None]
    install_error_handlers(app)
    app.add_exception_handler(IntegrityError, _on_integrity_error)
    routes = api_router()
    for prefix in API_PREFIXES:
        app.include_router(routes, prefix=prefix, include_in_schema=not prefix)
        app.include_router(health.router, prefix=prefix, include_in_schema=not prefix)
    app.include_router(health.metrics_router)
    web_pages.install(app)
    _document_as_enforced(app, settings)
    if settings.metrics_token:  # outermost: every answer counted, a 429 too
        app.add_middleware(RequestMetrics)
    return app


def _document_as_enforced(app: FastAPI, settings: Settings) -> None:
    """Finish the OpenAPI document with what the routes cannot say themselves: 401 on
    exactly the operations that take a token, this server's image limit, and the
    response examples with their nulls (FastAPI drops None from examples it renders)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        first = app.openapi_schema is None
        document = build()
        if first:
            for path in document["paths"].values():
                for operation in path.values():
                    responses = operation["responses"]
                    if operation.get("security"):
                        responses.setdefault("401", UNAUTHORIZED)
                        if settings.rate_limit.strip() not in ("", "0"):
                            responses.setdefault("429", RATE_LIMITED)
                    else:
                        responses.pop("401", None)
            schemas = document["components"]["schemas"]
            for name, example in RESPONSE_EXAMPLES.items():
                schemas[name]["examples"] = [example]
            images = schemas["ProductImagesIn"]["properties"]["images"]
            images["maxItems"] = settings.max_images_per_product
            images["description"] += (
                f" At most {settings.max_images_per_product} per product on this server "
                "(IMAGESYNC_MAX_IMAGES_PER_PRODUCT); more is 422 `too_many_images`."
            )
        return document

    app.openapi = openapi  # type: ignore[method-assign]


UNAUTHORIZED = {
    "description": "Missing, unknown or revoked token",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
}
RATE_LIMITED = {
    "description": "Over the token's rate limit (`IMAGESYNC_RATE_LIMIT`); send it again after "
    "`Retry-After`. Every answer to a request with a token carries the IETF draft "
    "`RateLimit-Policy` and `RateLimit` headers.",
    "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
}


async def _on_integrity_error(_request: Request, exc: Exception) -> JSONResponse:
    # Two requests raced to create the same product, SKU or attribute: the loser's
    # transaction is rolled back whole; sending it again applies it.
    log.warning("http.integrity_conflict", error=str(exc.__cause__ or exc))
    return error_response(Conflict("A concurrent request changed the same records; retry"))
