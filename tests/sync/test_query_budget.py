"""What each path of image sync spends on the database, pinned as budgets: a change that
adds a round trip or a transaction fails here, whatever else it does.

The runners of `serve` are off (`embedded_worker=False`), so that only the path under
test touches the database; each path is driven as its runner drives it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.app import create_app
from imagesync.kit.db import session_scope
from imagesync.kit.settings import Settings
from imagesync.queue import Attempt
from imagesync.storage.models import Rendition
from imagesync.storage.renditions import render
from imagesync.sync.models import SyncJobProduct
from imagesync.sync.run import product
from imagesync.sync.run.context import SyncContext
from imagesync.sync.schemas import ImageResult, ProductResult, SyncJobRead
from tests.queries import Spent, counting
from tests.sync.conftest import ImageServer, make_image, server_settings

ITEMS = [f"p-{n}" for n in range(10)]


@pytest.fixture
def settings(database_url: str, tmp_path: Path, image_server: ImageServer) -> Settings:
    # The paths alone: what the rate limit adds is pinned on its own, below.
    return server_settings(
        database_url, tmp_path, image_server, embedded_worker=False, rate_limit="0"
    )


@pytest.fixture
async def headers(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> dict[str, str]:
    from tests.factories import create_account

    headers = await create_account(sessionmaker)
    products = [
        {
            "item_number": item,
            "variants": [
                {"sku": f"{item}-{c}", "attributes": {"Color": colour}}
                for c, colour in (("100", "Black"), ("900", "White"))
            ],
        }
        for item in ITEMS
    ]
    attributes = {
        "attributes": [
            {
                "name": "Color",
                "values": [{"value": "Black", "code": "100"}, {"value": "White", "code": "900"}],
            }
        ]
    }
    for path, body in (
        ("/attributes/sync", attributes),
        ("/products/sync", {"products": products}),
    ):
        answer = await client.post(path, json=body, headers=headers)
        assert answer.status_code == 200, answer.text
    return headers


def images(
    image_server: ImageServer, item: str, *, alt: str = "front", delay: float = 0.0
) -> list[dict[str, Any]]:
    return [
        {
            "url": image_server.add(
                # Pictures of their own: each product's run stores and renders its own.
                f"{item}-{n}.jpg",
                make_image((n * 40, ITEMS.index(item) * 20, 0), (900, 600)),
                delay=delay,
            ),
            "sort": n,
            "alt": alt,
            "attach_to_variants_matching_attribute_code": {"Color": "100"},
        }
        for n in range(3)
    ]


async def post(
    client: httpx.AsyncClient, headers: dict[str, str], products: list[dict[str, Any]]
) -> httpx.Response:
    return await client.post("/products/images/sync", json={"products": products}, headers=headers)


async def run_all(ctx: SyncContext, job_id: str) -> list[Spent]:
    """Run each queued product of the job as the queue runs it; what each spent."""
    async with session_scope(ctx.sessionmaker) as session:
        seqs = (
            await session.scalars(
                select(SyncJobProduct.seq)
                .where(SyncJobProduct.job_id == job_id, SyncJobProduct.status == "queued")
                .order_by(SyncJobProduct.seq)
            )
        ).all()
    spent = []
    for seq in seqs:
        with counting(ctx.sessionmaker) as one:
            await product.run_product(ctx, seq, Attempt(1, 5, {}))
        spent.append(one)
    return spent


# (statements, transactions) per path and database. The token of a request was read by
# an earlier one, and is cached (pinned apart: "token"). The queue's jobs of a
# transaction are one statement (the local runner's or procrastinate's).
BUDGETS = {
    # The job (holding the account's submissions), its products' images, its entries; the
    # rest plans the products to learn that they need downloads.
    "submit": {"sqlite": (9, 1), "postgresql": (9, 1)},
    # PostgreSQL takes the account's claim lock first (an exact per-account cap). The
    # claim reads whether the job announces its end (webhooks): with no endpoint, the
    # product's end reads nothing more.
    "run": {"sqlite": (20, 2), "postgresql": (21, 2)},
    # With a webhook, each product's end counts the job's unfinished products (the job's
    # row held on PostgreSQL); the last one reads the endpoints and queues the deliveries
    # (their rows, and their jobs).
    "run_notified": {"sqlite": (22, 2), "postgresql": (23, 2)},
    "run_last_notified": {"sqlite": (25, 2), "postgresql": (26, 2)},
    # A refresh of three known images, one of them changed: the run also reads the kept
    # images' sources (and their blobs), writes the new blob and moves its source to it,
    # and swaps the image's blob (the old one's grace period starts).
    "refresh": {"sqlite": (22, 2), "postgresql": (23, 2)},
    # The job, one read of its products' images, its entries, already finished.
    "noop": {"sqlite": (3, 1), "postgresql": (3, 1)},
    # The job ended at once, announced: the endpoints, their deliveries, their jobs.
    "noop_notified": {"sqlite": (6, 1), "postgresql": (6, 1)},
    "no_download": {"sqlite": (13, 1), "postgresql": (13, 1)},
    # A poll of a job: the job and its products in one plain read.
    "job": {"sqlite": (1, 1), "postgresql": (1, 1)},
    # A token not read lately: it and its account in one statement.
    "token": {"sqlite": (1, 1), "postgresql": (1, 1)},
    "rendition": {"sqlite": (4, 2), "postgresql": (4, 2)},
    # Counted in its own transaction on PostgreSQL, in memory on SQLite.
    "rate_limit": {"sqlite": (0, 0), "postgresql": (1, 1)},
}


def variant_codes_read(spent: Spent) -> int:
    """How often the variants' codes were read: once per plan (and per relink)."""
    marker = "SELECT variant.product_id, variant.id, attribute.name, attribute_value.code"
    return sum(" ".join(s.split()).startswith(marker) for s in spent.statements)


def within(spent: Spent, path: str, dialect: str) -> None:
    statements, transactions = BUDGETS[path][dialect]
    assert (len(spent.statements), spent.transactions) == (statements, transactions), (
        f"{path} on {dialect} spent {spent}\nits budget is {statements} statements in "
        f"{transactions} transactions"
    )


@pytest.fixture
def dialect(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


async def first_import(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> tuple[list[dict[str, Any]], Spent, list[Spent]]:
    """Ten products of three new images each, submitted and then run."""
    ctx: SyncContext = app.state.sync_context
    products = [{"item_number": item, "images": images(image_server, item)} for item in ITEMS]
    with counting(ctx.sessionmaker) as submitted:
        answer = await post(client, headers, products)
    assert answer.status_code == 202, answer.text
    runs = await run_all(ctx, answer.json()["id"])
    job = await client.get(f"/products/images/sync/{answer.json()['id']}", headers=headers)
    assert job.json()["status"] == "succeeded", job.text
    return products, submitted, runs


async def test_a_product_that_needs_downloads_is_run_in_two_transactions(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    dialect: str,
) -> None:
    """One takes it and reads all its run needs; one records its downloads, applies it and
    queues its renditions. It is planned once in its run."""
    _, submitted, runs = await first_import(app, client, headers, image_server)
    within(submitted, "submit", dialect)
    assert len(runs) == 10
    for spent in runs:
        within(spent, "run", dialect)
        assert variant_codes_read(spent) == 1, spent  # planned once


async def test_a_no_op_request_of_ten_products(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    dialect: str,
) -> None:
    products, _, _ = await first_import(app, client, headers, image_server)
    with counting(app.state.sessionmaker, app.state.read_sessionmaker) as spent:
        again = await post(client, headers, products)
    assert again.status_code == 200, again.text
    within(spent, "noop", dialect)


async def test_a_poll_of_a_job_is_one_read(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    dialect: str,
) -> None:
    """Every client reads its jobs until they finish (32 clients importing a catalog
    read hundreds a second): the job and its products in one read, answered as read."""
    products, _, _ = await first_import(app, client, headers, image_server)
    again = await post(client, headers, products)
    job = again.json()
    with counting(app.state.sessionmaker, app.state.read_sessionmaker) as spent:
        read = await client.get(f"/products/images/sync/{job['id']}", headers=headers)
    assert read.status_code == 200, read.text
    assert read.json() == job
    within(spent, "job", dialect)


async def test_a_product_ended_in_its_request_is_recorded_without_its_list(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    """An entry keeps the product as requested only for its run to read: one ended in its
    request (kept, or not found) records its result alone, not a second copy of its
    images, which was most of what a no-op request wrote."""
    products, _, _ = await first_import(app, client, headers, image_server)
    ctx: SyncContext = app.state.sync_context
    again = await post(client, headers, [*products[:9], {"item_number": "missing", "images": []}])
    assert again.status_code == 200, again.text
    async with session_scope(ctx.sessionmaker) as session:
        entries = (await session.scalars(select(SyncJobProduct).order_by(SyncJobProduct.seq))).all()
    queued, ended = entries[: len(ITEMS)], entries[len(ITEMS) :]
    assert [[i["url"] for i in e.request["images"]] for e in queued] == [
        [i["url"] for i in p["images"]] for p in products
    ]
    assert [(e.status, e.request) for e in ended] == [("succeeded", {})] * 9 + [("failed", {})]
    assert [p["counts"]["kept"] for p in again.json()["products"][:9]] == [3] * 9


async def test_a_no_op_result_is_made_once_as_recorded_and_answered_as_it_is(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each kept product's result is made once, as the JSON recorded for it, and the
    answer is written from it: no model per image made and then dumped to record it (that
    cost twice as much), and none validated back for the answer (a tenth of the
    request)."""
    products, _, _ = await first_import(app, client, headers, image_server)
    validate = ProductResult.model_validate
    validated: list[object] = []

    def counted(value: object, *args: object, **kwargs: object) -> ProductResult:
        validated.append(value)
        return validate(value, *args, **kwargs)  # type: ignore[arg-type]

    def dumped(*_: object, **__: object) -> None:
        raise AssertionError("a result was made as a model and dumped")

    monkeypatch.setattr(ProductResult, "model_validate", counted)
    monkeypatch.setattr(ProductResult, "model_dump", dumped)
    monkeypatch.setattr(ImageResult, "__init__", dumped)
    monkeypatch.setattr(SyncJobRead, "__init__", dumped)
    again = await post(client, headers, products)
    assert again.status_code == 200, again.text
    assert [p["counts"]["kept"] for p in again.json()["products"]] == [3] * 10
    assert validated == []


async def test_a_refresh_is_run_in_two_transactions(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    dialect: str,
) -> None:
    """The origins are asked outside any transaction, as downloads are: one takes the
    product and reads its sources; one records what changed, applies it and queues the
    new bytes' renditions."""
    products, _, _ = await first_import(app, client, headers, image_server)
    for n, item in enumerate(ITEMS):
        image_server.add(f"{item}-0.jpg", make_image((255, n * 20, 90), (900, 600)))
    answer = await client.post(
        "/products/images/sync?refresh=changed", json={"products": products}, headers=headers
    )
    assert answer.status_code == 202, answer.text
    runs = await run_all(app.state.sync_context, answer.json()["id"])
    job = (await client.get(f"/products/images/sync/{answer.json()['id']}", headers=headers)).json()
    for result in job["products"]:
        assert (result["counts"]["refreshed"], result["counts"]["unchanged"]) == (1, 2), result
    assert len(runs) == 10
    for spent in runs:
        within(spent, "refresh", dialect)


async def test_a_job_announced_to_a_webhook(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    dialect: str,
) -> None:
    """An account with an endpoint: only the job's end costs more, and only for that."""
    hook = await client.post(
        "/webhooks",
        headers=headers,
        json={"url": image_server.url("hook"), "events": ["sync.job.finished"]},
    )
    assert hook.status_code == 201, hook.text
    products, _, runs = await first_import(app, client, headers, image_server)
    *others, last = runs
    for spent in others:
        within(spent, "run_notified", dialect)
    within(last, "run_last_notified", dialect)
    with counting(app.state.sessionmaker) as spent:
        again = await post(client, headers, products)
    assert again.status_code == 200, again.text
    within(spent, "noop_notified", dialect)
    assert sum("webhook_delivery" in s for s in spent.statements) == 1


async def test_a_token_is_read_once_then_taken_from_the_cache(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str], dialect: str
) -> None:
    app.state.token_cache.seconds = 0.2
    await asyncio.sleep(0.2)  # what the set-up's requests cached has gone stale
    spent = []
    for _ in range(2):
        with counting(app.state.sessionmaker, app.state.read_sessionmaker) as one:
            answer = await client.get("/products/images/sync/nope", headers=headers)
        assert answer.status_code == 404, answer.text
        spent.append(one)
    read, cached = spent
    within(Spent(read.statements[:1], read.transactions - cached.transactions), "token", dialect)
    assert "api_token" in read.statements[0]
    assert not any("api_token" in s for s in cached.statements), cached


async def test_a_product_that_needs_no_download_is_applied_in_its_request(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    dialect: str,
) -> None:
    await first_import(app, client, headers, image_server)
    changed = [{"item_number": ITEMS[0], "images": images(image_server, ITEMS[0], alt="new")}]
    with counting(app.state.sessionmaker, app.state.read_sessionmaker) as spent:
        answer = await post(client, headers, changed)
    assert answer.status_code == 200, answer.text
    assert answer.json()["products"][0]["counts"]["updated"] == 3
    within(spent, "no_download", dialect)


async def test_what_the_rate_limit_adds_to_a_request(
    app: FastAPI,
    settings: Settings,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    dialect: str,
) -> None:
    limited = create_app(settings.model_copy(update={"rate_limit": "600/minute"}))
    async with limited.router.lifespan_context(limited):
        transport = httpx.ASGITransport(app=limited)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as counted:
            spent = []
            # The same request without and with the limit; the first count in a window
            # also forgets the windows before it, so the third is the one compared.
            for on, each in ((app, client), (limited, counted), (limited, counted)):
                with counting(on.state.sessionmaker, on.state.read_sessionmaker) as one:
                    answer = await each.get("/products/images/sync/nope", headers=headers)
                assert answer.status_code == 404, answer.text
                spent.append(one)
    assert "ratelimit" in answer.headers
    bare, _, with_limit = spent
    added = Spent(
        [s for s in with_limit.statements if "rate_window" in s],
        with_limit.transactions - bare.transactions,
    )
    assert len(with_limit.statements) - len(bare.statements) == len(added.statements)
    within(added, "rate_limit", dialect)


async def test_a_rendition_is_made_in_two_transactions(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    dialect: str,
) -> None:
    await first_import(app, client, headers, image_server)
    async with session_scope(app.state.sessionmaker) as session:
        blob_id = await session.scalar(select(Rendition.blob_id).limit(1))
    assert blob_id is not None
    with counting(app.state.sessionmaker) as spent:
        await render(app.state.sync_context.blobs, blob_id, Attempt(1, 5, {}))
    within(spent, "rendition", dialect)
    async with session_scope(app.state.sessionmaker) as session:
        made = await session.scalars(select(Rendition.state).where(Rendition.blob_id == blob_id))
        assert set(made) == {"ready"}


async def test_a_catalog_change_meanwhile_makes_the_run_plan_again(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
) -> None:
    """Planned once, and again at apply only when the product's images version moved: a
    variant added while the product downloads gets its images all the same."""
    ctx: SyncContext = app.state.sync_context
    item = ITEMS[0]
    slow = images(image_server, item, delay=1.0)  # the catalog changes while they download
    answer = await post(client, headers, [{"item_number": item, "images": slow}])
    assert answer.status_code == 202, answer.text
    async with session_scope(ctx.sessionmaker) as session:
        (seq,) = (
            await session.scalars(
                select(SyncJobProduct.seq).where(SyncJobProduct.job_id == answer.json()["id"])
            )
        ).all()
    with counting(ctx.sessionmaker) as spent:
        run_task = asyncio.create_task(product.run_product(ctx, seq, Attempt(1, 5, {})))
        await asyncio.sleep(0.3)
        added = {
            "products": [
                {
                    "item_number": item,
                    "variants": [
                        {"sku": f"{item}-{c}", "attributes": {"Color": colour}}
                        for c, colour in (("100", "Black"), ("900", "White"), ("100-XL", "Black"))
                    ],
                }
            ]
        }
        changed = await client.post("/products/sync", json=added, headers=headers)
        assert changed.status_code == 200, changed.text
        await run_task
    # Planned, the catalog's relink, and planned again at apply: the version had moved.
    assert variant_codes_read(spent) == 3, spent
    read = await client.get(f"/products/{item}/images", headers=headers)
    skus = [sorted(i["variants"]) for i in read.json()["images"]]
    assert skus == [[f"{item}-100", f"{item}-100-XL"]] * 3
