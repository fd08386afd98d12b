"""Invariants 4 and 7: the final state follows submission order whatever the timing,
and queued work survives a worker that is not running (it is picked up later)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from imagesync.kit.db import session_scope, utcnow
from imagesync.kit.settings import Settings
from imagesync.queue import Attempt
from imagesync.queue.memory import MemoryQueue
from imagesync.runtime import resources, serving_work, tasks
from imagesync.sync import repository
from imagesync.sync.run.product import run_product
from tests.factories import create_tshirt, wait_for_job
from tests.sync.conftest import ImageServer, make_image, server_settings


@pytest.fixture
def settings(database_url: str, tmp_path: Path, image_server: ImageServer) -> Settings:
    return server_settings(database_url, tmp_path, image_server, embedded_worker=False)


async def submit(
    client: httpx.AsyncClient, headers: dict[str, str], urls: list[str]
) -> dict[str, Any]:
    body = {
        "products": [
            {
                "item_number": "cool-product-001",
                "images": [{"url": u, "sort": i} for i, u in enumerate(urls)],
            }
        ]
    }
    response = await client.post("/products/images/sync", json=body, headers=headers)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    assert job["status"] == "queued"
    return job


async def run_job(
    app: FastAPI, job_id: str, account_headers: dict[str, str], client: httpx.AsyncClient
) -> dict[str, Any]:
    """Run the job's products now, as a worker would (each run claims its product)."""
    maker = app.state.sessionmaker
    async with session_scope(maker) as session:
        seqs = [e.seq for e in (await repository.get_job_any(session, job_id)).products]
    for seq in seqs:
        await run_product(app.state.sync_context, seq, Attempt(1, 5, {}))
    read = await client.get(f"/products/images/sync/{job_id}", headers=account_headers)
    result: dict[str, Any] = read.json()
    return result


async def image_urls(client: httpx.AsyncClient, headers: dict[str, str]) -> list[str]:
    response = await client.get("/products/cool-product-001/images", headers=headers)
    return [i["url"] for i in response.json()["images"]]


async def test_an_older_sync_finishing_last_does_not_overwrite_a_newer_one(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    old = await submit(client, headers, [image_server.add("old.jpg")])
    new = await submit(client, headers, [image_server.add("new.jpg")])

    newer = await run_job(app, new["id"], headers, client)  # the newer one finishes first
    older = await run_job(app, old["id"], headers, client)

    assert newer["products"][0]["status"] == "succeeded"
    assert older["products"][0]["status"] == "superseded"
    assert older["status"] == "succeeded"  # superseded is not a failure
    assert await image_urls(client, headers) == [image_server.url("new.jpg")]


async def test_syncs_applied_in_order_end_in_the_newest_state(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    old = await submit(client, headers, [image_server.add("old.jpg")])
    new = await submit(client, headers, [image_server.add("new.jpg"), image_server.add("two.jpg")])
    await run_job(app, old["id"], headers, client)
    await run_job(app, new["id"], headers, client)
    assert await image_urls(client, headers) == [
        image_server.url("new.jpg"),
        image_server.url("two.jpg"),
    ]


def serving(app: FastAPI, settings: Settings) -> Any:
    """The queue's runner of `serve`, started now (this module's app runs none)."""
    return serving_work(
        settings.model_copy(update={"embedded_worker": True}), app.state.sync_context
    )


async def test_queued_jobs_wait_for_a_worker_and_are_then_done(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    settings: Settings,
) -> None:
    job = await submit(client, headers, [image_server.add("later.jpg")])
    await asyncio.sleep(0.2)
    assert image_server.hits["later.jpg"] == 0  # no worker: nothing ran, nothing lost

    async with serving(app, settings):
        read = await wait_for_job(client, headers, job["id"])
    assert read["status"] == "succeeded"
    assert await image_urls(client, headers) == [image_server.url("later.jpg")]


async def test_a_product_cut_off_while_running_is_resumed(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    settings: Settings,
) -> None:
    """A process that died running a product: its job stays taken (the local runner's
    `doing`; procrastinate's, under a worker silent for an hour). The restarted runner
    takes it back (at its start; procrastinate's stalled-job check within 10 s)."""
    job = await submit(client, headers, [image_server.add("resumed.jpg")])
    async with session_scope(app.state.sessionmaker) as session:
        seq = (await repository.get_job_any(session, job["id"])).products[0].seq
        assert await repository.claim_entry(session, seq, account_max=3)  # then "crash"
        if session.get_bind().dialect.name == "sqlite":
            await session.execute(text("UPDATE queue_job SET status = 'doing'"))
        else:
            worker = await session.scalar(
                text(
                    "INSERT INTO procrastinate_workers (last_heartbeat) "
                    "VALUES (now() - interval '1 hour') RETURNING id"
                )
            )
            await session.execute(
                text("UPDATE procrastinate_jobs SET status = 'doing', worker_id = :w"),
                {"w": worker},
            )

    async with serving(app, settings):  # a restarted process
        read = await wait_for_job(client, headers, job["id"], seconds=30)
    assert read["status"] == "succeeded"
    assert image_server.hits["resumed.jpg"] == 1


async def post(
    client: httpx.AsyncClient, headers: dict[str, str], products: list[dict[str, Any]]
) -> httpx.Response:
    return await client.post("/products/images/sync", json={"products": products}, headers=headers)


async def test_a_resync_of_known_images_is_applied_within_the_request(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    """No worker runs in this module: a finished answer can only come from the request."""
    url = image_server.add("known.jpg")
    first = await submit(client, headers, [url])  # needs a download: queued
    await run_job(app, first["id"], headers, client)

    response = await post(
        client,
        headers,
        [{"item_number": "cool-product-001", "images": [{"url": url, "sort": 1, "alt": "new"}]}],
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded"
    assert job["products"][0]["counts"]["updated"] == 1
    assert job["products"][0]["counts"]["downloaded"] == 0
    assert image_server.hits["known.jpg"] == 1
    assert response.headers["location"].endswith(job["id"])


async def test_a_product_with_an_earlier_pending_sync_waits_its_turn(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    await submit(client, headers, [image_server.add("slow.jpg")])  # pending, needs a download
    response = await post(
        client,
        headers,
        [
            {"item_number": "cool-product-001", "images": []},  # no download, but must wait
        ],
    )
    assert response.status_code == 202
    assert response.json()["products"][0]["status"] == "queued"


async def test_products_needing_no_download_finish_while_others_queue(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    await create_tshirt(client, headers, "other-product")
    response = await post(
        client,
        headers,
        [
            {
                "item_number": "cool-product-001",
                "images": [{"url": image_server.add("n.jpg"), "sort": 1}],
            },
            {"item_number": "other-product", "images": []},
        ],
    )
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "running"
    assert [p["status"] for p in job["products"]] == ["queued", "succeeded"]
    assert image_server.hits["n.jpg"] == 0


async def test_an_unfinished_job_says_where_and_when_to_read_it_again(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    image = {"url": image_server.add("a.jpg"), "sort": 1}
    body = {"products": [{"item_number": "cool-product-001", "images": [image]}]}
    response = await client.post("/products/images/sync", json=body, headers=headers)
    assert response.status_code == 202
    job_id = response.json()["id"]
    assert response.headers["Location"].endswith(f"/products/images/sync/{job_id}")
    assert response.headers["Retry-After"] == "1"
    read = await client.get(response.headers["Location"], headers=headers)
    assert read.json()["status"] == "queued"
    assert read.headers["Retry-After"] == "1"
    # A job that has waited long is read less often: a tenth of its age, at most 10 s.
    for age, expected in ((35, "3"), (3600, "10")):
        async with session_scope(app.state.sessionmaker) as session:
            job = await repository.get_job_any(session, job_id)
            job.created_at = utcnow() - timedelta(seconds=age)
        read = await client.get(response.headers["Location"], headers=headers)
        assert read.headers["Retry-After"] == expected

    finished = await run_job(app, job_id, headers, client)
    assert finished["status"] == "succeeded"
    read = await client.get(f"/products/images/sync/{job_id}", headers=headers)
    assert "Retry-After" not in read.headers
    # A sync that needed nothing finishes in the request: nothing to wait for.
    again = await client.post("/products/images/sync", json=body, headers=headers)
    assert again.status_code == 200
    assert "Retry-After" not in again.headers


async def test_the_fake_queue_sees_one_job_per_product_to_download_and_runs_it(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    settings: Settings,
) -> None:
    """What a request queues, read off the fake queue: the product that needs a download,
    under its product's lock and its account's share; not the one applied in the
    request. Run through the fake, the product and its renditions are done."""
    ctx = app.state.sync_context
    wide = make_image((10, 120, 200), (500, 400))  # wider than 200 and 400: two renditions
    queue = MemoryQueue(tasks())
    ctx.blobs.queue = queue
    await create_tshirt(client, headers, "other-product")
    response = await post(
        client,
        headers,
        [
            {
                "item_number": "cool-product-001",
                "images": [{"url": image_server.add("q.jpg", wide), "sort": 1}],
            },
            {"item_number": "other-product", "images": []},
        ],
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert [p["status"] for p in job["products"]] == ["queued", "succeeded"]
    (deferred,) = queue.jobs
    assert deferred.task == "sync.run_product"
    assert (deferred.lock or "").endswith(":cool-product-001")
    assert (deferred.share or "").startswith("account:")

    await queue.run_all(resources(ctx, settings))
    assert queue.jobs == []
    assert queue.failed == []
    read = await client.get(f"/products/images/sync/{job['id']}", headers=headers)
    assert read.json()["status"] == "succeeded"
    (image,) = (await client.get("/products/cool-product-001/images", headers=headers)).json()[
        "images"
    ]
    assert [(r["width"], r["state"]) for r in image["renditions"]] == [
        (200, "ready"),
        (400, "ready"),
    ]
