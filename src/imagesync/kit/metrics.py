"""Metrics for the operator, in Prometheus' text format (`GET /metrics`, behind
`IMAGESYNC_METRICS_TOKEN`).

Two kinds, named apart:
- **this process's own** counters and histograms (`PROCESS`): the requests it answered,
  the downloads and webhook calls it made. Each process exposes its own; Prometheus
  scrapes each (not through a load balancer) and sums them. The processes of one
  `serve --workers N` share one port, so they keep their counts in files
  (`PROMETHEUS_MULTIPROC_DIR`, which `serve` sets) and any of them answers their sum.
- **the cluster's state**, read from the database at each scrape (`imagesync_cluster_*`
  gauges): the same whichever process answers; aggregate them with `max`, never `sum`.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# prometheus-client's own variable: set, counts are kept in files there, for every process.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

PROCESS = CollectorRegistry()  # this process's own, made once per process

REQUESTS = Counter(
    "imagesync_http_requests",
    "Requests answered, by route (its path template), method and status.",
    ["route", "method", "status"],
    registry=PROCESS,
)
REQUEST_SECONDS = Histogram(
    "imagesync_http_request_duration_seconds",
    "Seconds from a request's arrival to its answer's last byte, by route and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=PROCESS,
)


class RequestMetrics:
    """Counts each HTTP request by the route that answered it (its template, so that
    item numbers and ids never become labels), and times it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless the app answers

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            REQUESTS.labels(route, method, str(status)).inc()
            REQUEST_SECONDS.labels(route, method).observe(time.perf_counter() - started)


class Families(Collector):
    """Metric families made elsewhere (from a database read), collected as they are."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def exposition(cluster: Iterable[Metric]) -> bytes:
    """This process's metrics (those of every process of `serve --workers N`, summed)
    and the cluster's, in the text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families(cluster))
    own = PROCESS
    if os.environ.get(MULTIPROCESS_ENV):
        own = CollectorRegistry()
        MultiProcessCollector(own)  # type: ignore[no-untyped-call]
    return generate_latest(own) + generate_latest(registry)


def authorized(header: str | None, token: str) -> bool:
    """Whether an `Authorization` header carries `token` as a bearer token."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )
