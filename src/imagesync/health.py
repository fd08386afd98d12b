"""The health checks, and `/metrics` for the operator."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.kit.db import session_scope
from imagesync.kit.deps import SessionDep
from imagesync.kit.errors import ErrorResponse, NotFound, Unauthorized
from imagesync.kit.metrics import CONTENT_TYPE, authorized, exposition
from imagesync.kit.routes import StrictRoute
from imagesync.kit.settings import Settings
from imagesync.runtime import uses_procrastinate
from imagesync.sync.reads.status import ClusterState, cluster_state

router = APIRouter(tags=["health"], route_class=StrictRoute)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=None,
    responses={503: {"model": ErrorResponse, "description": "The database is unreachable"}},
)
async def readyz(session: SessionDep) -> dict[str, str] | JSONResponse:
    """The process can reach its database."""
    try:
        await session.execute(text("SELECT 1"))
    except Exception as exc:
        return JSONResponse(
            {
                "errors": [
                    {
                        "status": 503,
                        "code": "database_unreachable",
                        "title": "Database unreachable",
                        "detail": str(exc),
                    }
                ]
            },
            status_code=503,
        )
    return {"status": "ok", "database": "ok"}


# `/metrics` answers once, not under /v10: it is the operator's, not TRAEDE's API.
metrics_router = APIRouter(include_in_schema=False)


@metrics_router.get("/metrics")
async def metrics(request: Request) -> Response:
    """This process's metrics and the cluster's, in Prometheus' text format, for the
    bearer of `IMAGESYNC_METRICS_TOKEN` (unset: 404)."""
    settings: Settings = request.app.state.settings
    if not settings.metrics_token or settings.metrics_port:
        # Off, or on a port of its own (which a caller of the API need not learn).
        raise NotFound("No such path")
    if not authorized(request.headers.get("Authorization"), settings.metrics_token):
        raise Unauthorized("/metrics needs IMAGESYNC_METRICS_TOKEN as a bearer token")
    families = await cluster_metrics(request.app.state.sessionmaker, settings)
    return Response(exposition(families), media_type=CONTENT_TYPE)


async def cluster_metrics(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> list[Metric]:
    """The cluster's state, read from the database now, as metric families."""
    async with session_scope(sessionmaker) as session:
        state = await cluster_state(session, procrastinate=uses_procrastinate(settings))
    return cluster_families(state)


def cluster_families(state: ClusterState) -> list[Metric]:
    """The cluster's state as gauges: the same in every process (aggregate with `max`)."""

    def by(name: str, help_text: str, label: str, values: dict[str, int]) -> Metric:
        family = GaugeMetricFamily(name, help_text, labels=[label])
        for key, value in sorted(values.items()):
            family.add_metric([key], value)
        return family

    waiting = {"queued": 0, "running": 0, **state.waiting}
    oldest = GaugeMetricFamily(
        "imagesync_cluster_oldest_queued_seconds",
        "How long the oldest product still queued has waited (0: none waits).",
        value=state.oldest_queued_seconds or 0.0,
    )
    pending = GaugeMetricFamily(
        "imagesync_cluster_renditions_pending",
        "Stored originals whose renditions are still to be made.",
        value=state.renditions_pending,
    )
    queue = GaugeMetricFamily(
        "imagesync_cluster_queue_jobs",
        "The queue's jobs, by queue and status (procrastinate's, or the local runner's).",
        labels=["queue", "status"],
    )
    for name, statuses in sorted(state.queue_jobs.items()):
        for status, n in sorted(statuses.items()):
            queue.add_metric([name, status], n)
    return [
        by(
            "imagesync_cluster_products_waiting",
            "Products of sync jobs queued or running now.",
            "status",
            waiting,
        ),
        oldest,
        by(
            "imagesync_cluster_products_ended_24h",
            "Products of sync jobs that ended in the last 24 hours, by status.",
            "status",
            state.ended_day,
        ),
        by(
            "imagesync_cluster_product_failures_24h",
            "Products of sync jobs that failed in the last 24 hours, by the error's code.",
            "code",
            state.failed_day,
        ),
        by(
            "imagesync_cluster_jobs_24h",
            "Sync jobs recorded in the last 24 hours, by status.",
            "status",
            state.jobs_day,
        ),
        pending,
        queue,
    ]
