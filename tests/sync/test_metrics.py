"""`GET /metrics`: Prometheus' text format, parsed by prometheus-client's own parser;
off unless `IMAGESYNC_METRICS_TOKEN` is set, and only for its bearer; counters that move
as a real `serve` runs a sync, and the cluster's state read from the database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagesync.app import create_app
from imagesync.kit.settings import Settings
from tests.factories import create_account
from tests.prometheus import Samples, samples, value
from tests.served import clean_env, create_token, free_port, serve
from tests.sync.conftest import ImageServer

TOKEN = "metrics-token-0123456789"


async def test_off_without_its_token_and_only_for_its_bearer(
    database_url: str, tmp_path: Path
) -> None:
    off = create_app(Settings(database_url=database_url, storage_url=str(tmp_path / "f")))
    async with off.router.lifespan_context(off):
        transport = httpx.ASGITransport(app=off)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answer = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 404
    assert answer.json()["errors"][0]["code"] == "not_found"

    on = create_app(
        Settings(database_url=database_url, storage_url=str(tmp_path / "f"), metrics_token=TOKEN)
    )
    async with on.router.lifespan_context(on):
        account = await create_account(on.state.sessionmaker)
        transport = httpx.ASGITransport(app=on)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for headers in ({}, {"Authorization": "Bearer wrong"}, account):
                answer = await client.get("/metrics", headers=headers)
                assert answer.status_code == 401, headers
                assert answer.json()["errors"][0]["code"] == "unauthorized"
            assert (await client.get("/v10/metrics")).status_code == 404  # the API's only
            await client.get("/products/an-item-number", headers=account)
            answer = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(answer.text)
    # Requests are counted by route template: an item number never becomes a label.
    route = "/products/{item_number:path}"
    assert value(found, "imagesync_http_requests_total", route=route, method="GET", status="404")
    assert "an-item-number" not in answer.text
    assert value(found, "imagesync_cluster_renditions_pending") == 0


async def test_counters_move_as_a_served_sync_runs(
    tmp_path: Path, database_env: dict[str, str], image_server: ImageServer
) -> None:
    port = image_server.base.rsplit(":", 1)[1]
    env = {
        **clean_env(),
        **database_env,
        "IMAGESYNC_FETCH_ALLOW": f"127.0.0.1:{port}",
        "IMAGESYNC_FETCH_RETRIES": "0",
        "IMAGESYNC_STORAGE_URL": str(tmp_path / "files"),
        "IMAGESYNC_METRICS_TOKEN": TOKEN,
    }
    subprocess.run(
        [sys.executable, "-m", "imagesync", "migrate"], cwd=tmp_path, env=env, check=True
    )
    token = create_token(tmp_path, env)
    good = image_server.add("good.jpg")
    size = len(image_server.routes["good.jpg"].body)
    body = {
        "products": [
            {"item_number": "p-ok", "images": [{"url": good, "sort": 1}]},
            {"item_number": "p-bad", "images": [{"url": image_server.url("gone"), "sort": 1}]},
        ]
    }
    with serve(tmp_path, env) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            before, job, after = await sync_between_scrapes(http, token, body)
    assert job["status"] == "partially_failed", job

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("imagesync_downloads_total", outcome="fetched") == 1
    assert moved("imagesync_downloads_total", outcome="download_http_error") == 1
    assert moved("imagesync_downloaded_bytes_total") == size
    assert moved("imagesync_products_ended_total", status="succeeded") == 1
    assert moved("imagesync_products_ended_total", status="failed") == 1
    assert moved("imagesync_product_failures_total", code="download_http_error") == 1
    sync = {"route": "/products/images/sync", "method": "POST"}
    assert moved("imagesync_http_requests_total", status="200", **sync) == 1
    assert moved("imagesync_http_request_duration_seconds_count", **sync) == 1
    # The cluster's state, read from the database.
    assert value(after, "imagesync_cluster_jobs_24h", status="partially_failed") == 1
    assert value(after, "imagesync_cluster_products_ended_24h", status="failed") == 1
    assert value(after, "imagesync_cluster_product_failures_24h", code="download_http_error") == 1
    assert value(after, "imagesync_cluster_products_waiting", status="queued") == 0
    assert value(after, "imagesync_cluster_oldest_queued_seconds") == 0


async def sync_between_scrapes(
    http: httpx.AsyncClient, token: str, body: dict[str, Any]
) -> tuple[Samples, dict[str, Any], Samples]:
    """Metrics before the sync, its finished job, and metrics after it."""
    auth = {"Authorization": f"Bearer {token}"}
    scrape = {"Authorization": f"Bearer {TOKEN}"}
    products: list[dict[str, Any]] = [{"item_number": n, "variants": []} for n in ("p-ok", "p-bad")]
    answer = await http.post("/products/sync", json={"products": products}, headers=auth)
    assert answer.is_success, answer.text
    before = samples((await http.get("/metrics", headers=scrape)).text)
    job = (await http.post("/products/images/sync?wait=20", json=body, headers=auth)).json()
    after = samples((await http.get("/metrics", headers=scrape)).text)
    return before, job, after


@pytest.mark.parametrize("token", ["short", "nöt-ascii-but-long-enough"])
def test_a_weak_or_unusable_token_stops_the_service_at_start(token: str) -> None:
    with pytest.raises(ValueError, match="16 printable ASCII"):
        Settings(metrics_token=token)


async def test_a_port_of_its_own_keeps_metrics_off_the_api(
    database_url: str, tmp_path: Path
) -> None:
    """With IMAGESYNC_METRICS_PORT, `serve` answers /metrics there, with the cluster's
    state, and its API port answers 404."""
    port = free_port()
    app = create_app(
        Settings(
            database_url=database_url,
            storage_url=str(tmp_path / "f"),
            metrics_token=TOKEN,
            metrics_port=port,
        )
    )
    scrape = {"Authorization": f"Bearer {TOKEN}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as api:
            assert (await api.get("/metrics", headers=scrape)).status_code == 404
            await api.get("/healthz")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as own:
            assert (await own.get("/metrics")).status_code == 401
            answer = await own.get("/metrics", headers=scrape)
    assert answer.status_code == 200
    found = samples(answer.text)
    health = {"route": "/healthz", "method": "GET", "status": "200"}
    assert value(found, "imagesync_http_requests_total", **health) >= 1
    assert ("imagesync_cluster_renditions_pending", frozenset()) in found
