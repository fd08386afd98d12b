"""Process-wide resources, built once per process: the database engine, the blob store,
the downloader and the queue, bundled as the `SyncContext` that running work needs.
`serve` (app.py), `worker` and `collect` start here: this is where the domains are wired
together (the blob users image sync declares, the catalog's listener, every task), and
where the queue's runner is chosen: procrastinate on PostgreSQL (in `serve`, or in
`imagesync worker` processes), the local runner on SQLite."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import procrastinate
import procrastinate.worker
import structlog
from aiohttp import web
from prometheus_client.metrics_core import Metric

from imagesync.catalog import events
from imagesync.fetch.downloader import FetchLimits, SafeFetcher
from imagesync.kit.aio import wait_event
from imagesync.kit.db import create_engine, create_sessionmaker
from imagesync.kit.metrics import CONTENT_TYPE, authorized, exposition
from imagesync.kit.settings import Settings, ensure_sqlite_directory
from imagesync.media.budget import DecodeBudget
from imagesync.media.probe import MediaLimits
from imagesync.queue import MAINTENANCE, QUEUES, RENDITIONS, SYNC, WEBHOOKS, Queue, Tasks
from imagesync.queue import procrastinate as queue_procrastinate
from imagesync.queue.local import Lane, LocalQueue, LocalRunner, Waker
from imagesync.queue.procrastinate import ProcrastinateQueue, ResilientConnector, conninfo
from imagesync.storage import tasks as storage_tasks
from imagesync.storage.context import Blobs
from imagesync.storage.staging import Staging, default_parent
from imagesync.storage.store import store_from_settings
from imagesync.sync import tasks as sync_tasks
from imagesync.sync.models import BLOB_USERS
from imagesync.sync.reads.images import CatalogImages
from imagesync.sync.run.context import SyncContext
from imagesync.sync.run.download import store_waits

log = structlog.get_logger(__name__)

# Set by `serve --workers N` for the processes it starts, never by hand: the socket on
# which the API processes wake the local runner in the process of the work.
WAKE_SOCKET_ENV = "_IMAGESYNC_WAKE_SOCKET"

# Webhook calls at once in `serve`: each waits on an account's endpoint, not on this
# machine, and beside the syncs' slots, so that a slow endpoint delays no sync.
WEBHOOK_CONCURRENCY = 4


async def _stopped_within(seconds: float, stop: asyncio.Event | None) -> bool:
    """Whether `stop` is set within `seconds`, or without one SIGTERM or SIGINT arrives
    (procrastinate's own handlers are off between its runs)."""
    if stop is not None:
        await wait_event(stop, seconds)
        return stop.is_set()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await wait_event(stop, seconds)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return stop.is_set()


def tasks() -> Tasks:
    """Every task of the service."""
    declared = Tasks()
    sync_tasks.register(declared)
    storage_tasks.register(declared)
    return declared


def uses_procrastinate(settings: Settings) -> bool:
    """Whether procrastinate runs the queue: whenever the database is PostgreSQL."""
    return not settings.async_database_url.startswith("sqlite")


def procrastinate_app(settings: Settings, *, pool_size: int = 2) -> procrastinate.App:
    """The procrastinate app with every task of the service registered."""
    connector = ResilientConnector(
        conninfo=conninfo(settings.async_database_url),
        min_size=1,
        max_size=pool_size,
        kwargs={"application_name": "imagesync-queue"},
    )
    app = procrastinate.App(connector=connector)
    queue_procrastinate.register(app, tasks(), max_attempts=settings.task_max_attempts)
    return app


def make_queue(settings: Settings, *, pool_size: int = 2) -> Queue:
    """The queue the domains defer to. procrastinate's pool is opened only where its
    worker runs: the API inserts jobs on its own transaction's connection."""
    if uses_procrastinate(settings):
        return ProcrastinateQueue(procrastinate_app(settings, pool_size=pool_size))
    path = os.environ.get(WAKE_SOCKET_ENV)
    return LocalQueue(tasks(), waker=Waker(path) if path else None)


def runs_work(settings: Settings) -> bool:
    """Whether `serve` runs the queue's work in its own process."""
    return settings.embedded_worker and settings.queue == "embedded"


def serve_connections(settings: Settings) -> int:
    """What `serve` uses at once: each running product one and each rendition slot one
    (when it runs the work), and requests, each holding one at a time."""
    work = settings.worker_concurrency + settings.rendition_concurrency + 2
    return (work if runs_work(settings) else 0) + 8


# SQLite connections a process reads on, beside its one writer.
READERS = 4


def pool_options(settings: Settings, connections: int) -> dict[str, Any]:
    """PostgreSQL: up to twice `connections`, each opened when first needed and then kept
    (an overflow connection would be opened and closed again for every request of a
    burst, costing the database a backend each time). SQLite: one, since
    SQLite has one writer; waiting for it in the pool, in order, costs far less than
    SQLite's own busy-wait (every transaction here is short). Either way a caller waits
    up to a minute for a connection before it fails."""
    if settings.async_database_url.startswith("sqlite"):
        return {"pool_size": 1, "max_overflow": 0, "pool_timeout": 60}
    return {"pool_size": 2 * connections, "max_overflow": 0, "pool_timeout": 60}


@asynccontextmanager
async def open_context(
    settings: Settings, queue: Queue, *, connections: int = 4
) -> AsyncIterator[SyncContext]:
    """Engine, store and downloader for this process; all closed on exit. `connections`:
    how many database connections this process uses at once when busy."""
    events.listen(CatalogImages())
    ensure_sqlite_directory(settings)
    engine = create_engine(settings.async_database_url, **pool_options(settings, connections))
    readers = None
    url = settings.async_database_url
    if (
        url.startswith("sqlite")
        and ":memory:" not in url
        and url.rstrip("/") != "sqlite+aiosqlite:"
    ):
        # WAL lets readers run beside the one writer: reads do not queue behind writes,
        # nor behind other reads. (An in-memory database is each connection's own.)
        readers = create_engine(
            settings.async_database_url,
            read_only=True,
            pool_size=READERS,
            max_overflow=0,
            pool_timeout=60,
        )
    store = store_from_settings(settings)
    limits = FetchLimits(
        max_bytes=settings.fetch_max_bytes,
        total_timeout=settings.fetch_timeout_seconds,
        retries=settings.fetch_retries,
        backoff_base=settings.fetch_retry_base_seconds,
        concurrency=settings.download_concurrency,
        per_host_concurrency=settings.download_concurrency_per_host,
        per_share_concurrency=settings.account_max_downloads,
        ports=settings.fetch_port_set,
    )
    staging = Staging(Path(settings.staging_dir) if settings.staging_dir else default_parent())
    try:
        async with SafeFetcher(
            allow=settings.fetch_allow_pairs,
            limits=limits,
            temp_dir=staging.in_flight,
            proxy=settings.fetch_proxy or None,
        ) as fetcher:
            sessionmaker = create_sessionmaker(engine)
            media = MediaLimits(
                max_pixels=settings.image_max_pixels,
                max_frames=settings.image_max_frames,
                max_decoded_bytes=settings.max_decoded_mb * 2**20,
            )
            blobs = Blobs(
                sessionmaker,
                store,
                queue,
                BLOB_USERS,
                media=media,
                decode_budget=DecodeBudget(media.max_decoded_bytes),
                staging=staging,
                rendition_widths=settings.rendition_width_set,
            )
            yield SyncContext(
                sessionmaker,
                fetcher,
                blobs,
                account_max_products=settings.account_max_products,
                store_waits=store_waits(settings.store_wait_seconds),
                readers=None if readers is None else create_sessionmaker(readers),
            )
    finally:
        await engine.dispose()
        if readers is not None:
            await readers.dispose()


def resources(ctx: SyncContext, settings: Settings) -> dict[str, Any]:
    """What tasks are given (`Attempt.resources`)."""
    return {"sync": ctx, "blobs": ctx.blobs, "settings": settings}


@asynccontextmanager
async def serving_work(settings: Settings, ctx: SyncContext) -> AsyncIterator[None]:
    """`serve`'s own runner of the queue's work, while the body runs: the local runner on
    SQLite, procrastinate workers on PostgreSQL; none when the work runs elsewhere
    (`IMAGESYNC_QUEUE=procrastinate`) or nowhere (`IMAGESYNC_EMBEDDED_WORKER=false`)."""
    if not runs_work(settings):
        yield
        return
    queue = ctx.queue
    if isinstance(queue, LocalQueue):
        runner = LocalRunner(
            queue,
            ctx.sessionmaker,
            [
                Lane(SYNC, settings.worker_concurrency, share_max=settings.account_max_products),
                Lane(RENDITIONS, settings.rendition_concurrency, behind=SYNC),
                Lane(MAINTENANCE, 1),
                Lane(WEBHOOKS, WEBHOOK_CONCURRENCY),
            ],
            resources(ctx, settings),
            max_attempts=settings.task_max_attempts,
            grace_seconds=settings.worker_shutdown_grace_seconds,
        )
        await runner.start()
        try:
            yield
        finally:
            await runner.stop()
        return
    assert isinstance(queue, ProcrastinateQueue)
    stop = asyncio.Event()
    async with queue.app.open_async():
        # Renditions and webhook calls in workers of their own, so that a burst of them
        # never holds the slots of the syncs.
        workers = [
            asyncio.create_task(
                run_procrastinate(
                    queue.app,
                    ctx,
                    settings,
                    queues=list(names),
                    concurrency=concurrency,
                    name=f"serve-{label}",
                    stop=stop,
                ),
                name=f"procrastinate-{label}",
            )
            for label, names, concurrency in (
                ("sync", (SYNC, MAINTENANCE), settings.worker_concurrency),
                ("renditions", (RENDITIONS,), settings.rendition_concurrency),
                ("webhooks", (WEBHOOKS,), WEBHOOK_CONCURRENCY),
            )
        ]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)


async def run_worker(
    settings: Settings, *, concurrency: int, queues: list[str] | None, name: str = "worker"
) -> None:
    """`imagesync worker`: take and run jobs until SIGTERM or SIGINT; then stop taking
    work, give the jobs in hand `IMAGESYNC_WORKER_SHUTDOWN_GRACE_SECONDS` to finish, and
    return."""
    queue = make_queue(settings, pool_size=concurrency + 3)
    assert isinstance(queue, ProcrastinateQueue)
    async with (
        open_context(settings, queue, connections=concurrency + 2) as ctx,
        queue.app.open_async(),
        metrics_server(settings),
    ):
        settle()
        await run_procrastinate(
            queue.app,
            ctx,
            settings,
            queues=list(queues or QUEUES),
            concurrency=concurrency,
            name=name,
        )


YOUNG_GC_THRESHOLD = 10_000


def settle() -> None:
    """Called by a process of the service (an API process, the work process, a worker)
    once it has started: what it made to start (modules, the app, pools) lives as long
    as it does, so the collector's full passes leave it out. In an API process such a
    pass took 135-155 ms, during a request, about once every 150 no-op syncs; now
    about 35 ms. Not called where an app is made in another program's process (the
    tests): freezing keeps the garbage that process has not yet collected.

    The young generation is collected after 10,000 more allocations than frees, not
    700: a no-op sync request allocates more than 700 objects it frees again before it
    ends, so at 700 about every request paid a pass for nothing (3 % of its CPU)."""
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


@asynccontextmanager
async def metrics_server(
    settings: Settings,
    *,
    cluster: Callable[[], Awaitable[list[Metric]]] | None = None,
    name: str = "worker",
) -> AsyncIterator[None]:
    """`GET /metrics` on `IMAGESYNC_METRICS_PORT`, while the body runs: this process's
    own counters, and the cluster's state where `cluster` reads it (`serve`; a worker
    leaves that to the API)."""
    if not (settings.metrics_port and settings.metrics_token):
        yield
        return

    async def answer(request: web.Request) -> web.Response:
        if not authorized(request.headers.get("Authorization"), settings.metrics_token):
            return web.Response(status=401, text="/metrics needs IMAGESYNC_METRICS_TOKEN\n")
        families = await cluster() if cluster is not None else []
        return web.Response(body=exposition(families), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.metrics_port).start()
    log.info(f"{name}.metrics", host=settings.host, port=settings.metrics_port)
    try:
        yield
    finally:
        await runner.cleanup()


async def run_procrastinate(
    app: procrastinate.App,
    ctx: SyncContext,
    settings: Settings,
    *,
    queues: list[str],
    concurrency: int,
    name: str,
    stop: asyncio.Event | None = None,
) -> None:
    """Run a procrastinate worker until it is asked to stop: by SIGTERM or SIGINT (no
    `stop` given: `imagesync worker`), or by `stop` (inside `serve`). It is started again
    whenever the database connection is lost."""
    handed_back: list[dict[str, Any]] = []

    async def note_handed_back(call_next: Any, context: Any, worker: Any) -> Any:  # noqa: ARG001
        """A job cut off by the stop (its grace spent) goes back to the queue: say which."""
        try:
            return await call_next()
        except (asyncio.CancelledError, procrastinate.exceptions.JobAborted):
            job = context.job
            handed_back.append({"job": job.id, "task": job.task_name, **job.task_kwargs})
            raise

    log.info("worker.started", name=name, concurrency=concurrency, queues=queues)
    lost = 0
    while True:
        started = time.monotonic()
        worker = procrastinate.worker.Worker(
            app=app,
            queues=queues,
            concurrency=concurrency,
            name=name,
            additional_context=resources(ctx, settings),
            shutdown_graceful_timeout=settings.worker_shutdown_grace_seconds,
            update_heartbeat_interval=settings.worker_heartbeat_seconds,
            stalled_worker_timeout=settings.stalled_worker_seconds,
            delete_jobs="successful",
            install_signal_handlers=stop is None,
            worker_middleware=[note_handed_back],
        )
        try:
            await _run_until_stopped(worker, stop)
            break  # asked to stop
        except procrastinate.exceptions.ConnectorException as exc:
            # procrastinate's worker ends when its connection is cut (a failover, a
            # restart of the database): start it again, as a new worker; what the old
            # one held is taken back as stalled work.
            lost = 1 if time.monotonic() - started > 60 else lost + 1
            wait = min(2.0 ** (lost - 1), 30.0)
            log.warning("worker.database_lost", error=str(exc.__cause__ or exc), retry_in=wait)
            if await _stopped_within(wait, stop):
                break
    # What was cut off goes back to the queue, to be run again by any worker.
    log.info("worker.stopped", name=name, handed_back=handed_back)


async def _run_until_stopped(
    worker: procrastinate.worker.Worker, stop: asyncio.Event | None
) -> None:
    """Run `worker` until it ends, or until `stop` is set: then ask it to stop as its
    signal handlers would, once it has started (a stop asked before its start would be
    forgotten), and let it finish the jobs in hand within its grace."""
    running = asyncio.create_task(worker.run(), name=f"procrastinate-{worker.worker_name}")  # type: ignore[no-untyped-call]
    if stop is None:
        await running
        return
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not running.done():
        while worker.run_task is None and not running.done():
            await asyncio.sleep(0.01)
        worker.stop()  # type: ignore[no-untyped-call]
    await running
