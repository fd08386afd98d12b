"""`imagesync serve`: N API processes answering on one port (`--workers N`, one per core
by default), and beside them one process of the work (the queue's runner: downloads,
renditions, webhook calls, the collector; and `IMAGESYNC_METRICS_PORT`), so that a
request never waits behind a download, a rendition or another request's CPU.

`serve` stays the one command: it starts the work process, hands the port to uvicorn
(which supervises the API processes and starts one again if it dies), starts the work
process again if that dies, and stops them all on SIGTERM or Ctrl-C. The API processes
wake the local runner through a socket (`queue.local.Waker`; procrastinate has its own
LISTEN), and keep their counters in files that any of them sums for `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.supervisors import Multiprocess

from imagesync.app import create_app, served
from imagesync.kit.logging import configure_logging
from imagesync.kit.metrics import MULTIPROCESS_ENV
from imagesync.kit.settings import Settings, load_settings
from imagesync.runtime import WAKE_SOCKET_ENV, runs_work, settle

log = structlog.get_logger(__name__)

RESTART_SECONDS = 1.0  # before the work process is started again after it died
PARENT_POLL_SECONDS = 1.0  # how often a process of `serve` looks whether `serve` is there
SERVE_PID_ENV = "_IMAGESYNC_SERVE_PID"  # `serve`'s, for the processes it starts


def serve_processes(settings: Settings) -> None:
    """Serve with `settings.api_processes` API processes and the work process until a
    signal stops them."""
    scratch = Path(tempfile.mkdtemp(prefix="imagesync-serve-"))
    (scratch / "metrics").mkdir()
    os.environ[WAKE_SOCKET_ENV] = str(scratch / "wake")
    os.environ[SERVE_PID_ENV] = str(os.getpid())
    os.environ[MULTIPROCESS_ENV] = str(scratch / "metrics")
    work = _Work(settings) if runs_work(settings) or settings.metrics_port else None
    if work is not None:
        work.start()
    config = uvicorn.Config(
        "imagesync.serving:api_app",
        factory=True,
        workers=settings.api_processes,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        http="imagesync.serving:NoDelayProtocol",
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
    )
    try:
        # Even one API process is started apart from `serve`, after the settings above
        # are in the environment: its counters then go to the shared files as it starts.
        with config.bind_socket() as sock:
            Multiprocess(config, sockets=[sock]).run()
    finally:
        if work is not None:
            work.stop()
        shutil.rmtree(scratch, ignore_errors=True)


class NoDelayProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP protocol, with Nagle's algorithm off on each connection. The socket
    uvicorn binds for its worker processes is made without `IPPROTO_TCP`, so asyncio
    leaves Nagle on, and an answer written in two parts waits for the client's delayed
    ACK: 40 ms on every request of a keep-alive connection."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


def api_app() -> FastAPI:
    """An API process of `serve`: no work, and no metrics port of its own; it stops
    when `serve` is gone (killed), as on SIGTERM."""
    settings = load_settings().model_copy(update={"embedded_worker": False})
    app = create_app(settings, metrics_port=False)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with inner(app) as state:
            settle()
            watch = asyncio.create_task(
                _with_parent(lambda: os.kill(os.getpid(), signal.SIGTERM)), name="parent"
            )
            try:
                yield state
            finally:
                watch.cancel()

    app.router.lifespan_context = lifespan
    return app


async def _with_parent(stop: Callable[[], None]) -> None:
    """Call `stop` once `serve` is gone (killed: it could not stop its processes), rather
    than serve on alone; also when it was gone before this process had started."""
    parent = int(os.environ.get(SERVE_PID_ENV, os.getppid()))
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_POLL_SECONDS)
    log.warning("serve.parent_gone", parent=parent)
    stop()


class _Work:
    """The work process, kept running while `serve` runs."""

    def __init__(self, settings: Settings) -> None:
        self.grace = settings.worker_shutdown_grace_seconds
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._keeper = threading.Thread(target=self._keep, name="work-keeper", daemon=True)

    def start(self) -> None:
        self._process = self._spawn()
        self._keeper.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "imagesync.serving"])

    def _keep(self) -> None:
        while not self._stopping.is_set():
            assert self._process is not None
            code = self._process.wait()
            if self._stopping.wait(RESTART_SECONDS):
                return
            log.error("serve.work_died", exit_code=code)
            self._process = self._spawn()

    def stop(self) -> None:
        """SIGTERM, and the grace period for the jobs in hand; then SIGKILL."""
        self._stopping.set()
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=self.grace + 10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def run_work(settings: Settings) -> None:
    """The work process: the queue's runner (if `serve` runs the work) and the metrics
    port (if set), until SIGTERM or SIGINT; then the runner hands back what it could not
    finish within its grace period."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with served(settings):
        settle()
        log.info("serve.work_started", pid=os.getpid(), runs_work=runs_work(settings))
        started = time.monotonic()
        watch = asyncio.create_task(_with_parent(stop.set), name="parent")
        await stop.wait()
        watch.cancel()
        log.info("serve.work_stopping", ran_seconds=round(time.monotonic() - started))


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_work(settings))


if __name__ == "__main__":
    main()
