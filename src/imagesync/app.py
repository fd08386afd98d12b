"""The ASGI application: `create_app(settings)` wires routers, errors and resources."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import structlog
from fastapi import APIRouter, FastAPI
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import JSONResponse

from imagesync import __version__, health
from imagesync.catalog import api as catalog_api
from imagesync.fetch.downloader import FetchLimits, SafeFetcher
from imagesync.kit.db import create_engine, create_sessionmaker
from imagesync.kit.errors import Conflict, error_response, install_error_handlers
from imagesync.kit.limits import BodySizeLimit
from imagesync.kit.logging import configure_logging
from imagesync.kit.settings import Settings, ensure_sqlite_directory, load_settings
from imagesync.media.probe import MediaLimits
from imagesync.storage.blobs import store_from_settings
from imagesync.sync import api as sync_api
from imagesync.sync.collector import Collector
from imagesync.sync.renditions import RenditionWorker
from imagesync.sync.service import SyncContext
from imagesync.sync.worker import SyncWorker

log = structlog.get_logger(__name__)

API_PREFIXES = ("", "/v10")  # TRAEDE's paths answer under /v10 too


def api_router() -> APIRouter:
    router = APIRouter()
    # Image routes first: /products/{item_number:path} would swallow .../images.
    router.include_router(sync_api.router)
    router.include_router(catalog_api.router)
    return router


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    configure_logging(settings.log_level, settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ensure_sqlite_directory(settings)
        engine = create_engine(settings.async_database_url)
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        store = store_from_settings(settings)
        app.state.store = store
        limits = FetchLimits(
            max_bytes=settings.fetch_max_bytes,
            total_timeout=settings.fetch_timeout_seconds,
            retries=settings.fetch_retries,
            backoff_base=settings.fetch_retry_base_seconds,
            concurrency=settings.download_concurrency,
            per_host_concurrency=settings.download_concurrency_per_host,
            ports=settings.fetch_port_set,
        )
        async with SafeFetcher(
            allow=settings.fetch_allow_pairs,
            limits=limits,
            temp_dir=store.temp_dir,
            proxy=settings.fetch_proxy or None,
        ) as fetcher:
            ctx = SyncContext(
                app.state.sessionmaker,
                fetcher,
                store,
                media=MediaLimits(
                    max_pixels=settings.image_max_pixels, max_frames=settings.image_max_frames
                ),
                rendition_widths=settings.rendition_width_set,
            )
            app.state.sync_context = ctx
            worker = SyncWorker(ctx, concurrency=settings.worker_concurrency)
            renderer = RenditionWorker(ctx, concurrency=settings.rendition_concurrency)
            collector = Collector(
                ctx,
                grace=timedelta(days=settings.blob_grace_days),
                interval=timedelta(seconds=settings.collect_interval_seconds),
            )
            if settings.embedded_worker:
                app.state.worker = worker
                app.state.renditions = renderer
                app.state.collector = collector
                ctx.wake_renditions = renderer.wake
                await worker.start(sole_worker=engine.dialect.name == "sqlite")
                await renderer.start()
                await collector.start()
            log.info(
                "app.started",
                database=engine.url.render_as_string(hide_password=True),
                embedded_worker=settings.embedded_worker,
            )
            try:
                yield
            finally:
                await collector.stop()
                await renderer.stop()
                await worker.stop()
                await engine.dispose()
                log.info("app.stopped")

    app = FastAPI(
        title="imagesync",
        version=__version__,
        summary="Keeps product images in sync with an external source (TRAEDE's API).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    app.add_exception_handler(IntegrityError, _on_integrity_error)
    routes = api_router()
    for prefix in API_PREFIXES:
        app.include_router(routes, prefix=prefix, include_in_schema=not prefix)
        app.include_router(health.router, prefix=prefix, include_in_schema=not prefix)
    return app


async def _on_integrity_error(_request: Request, exc: Exception) -> JSONResponse:
    # Two requests raced to create the same product, SKU or attribute: the loser's
    # transaction is rolled back whole; sending it again applies it.
    log.warning("http.integrity_conflict", error=str(exc.__cause__ or exc))
    return error_response(Conflict("A concurrent request changed the same records; retry"))
