"""`Idempotency-Key` on a sync: a request sent again with its key answers with the job it
recorded and records nothing; the same key with another request is refused."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.client import AsyncClient, ConnectionFailed
from imagesync.kit.db import create_engine, session_scope, utcnow
from imagesync.kit.settings import normalize_database_url
from imagesync.queue import Attempt
from imagesync.runtime import resources, tasks
from imagesync.sync.models import IdempotencyKey, SyncJob
from tests.factories import create_account, create_tshirt
from tests.served import clean_env, create_token, serve
from tests.sync.conftest import ImageServer

SYNC = "/products/images/sync"


def body(image_server: ImageServer, name: str = "a.jpg", alt: str = "front") -> dict[str, Any]:
    url = image_server.add(name)
    return {
        "products": [
            {"item_number": "cool-product-001", "images": [{"url": url, "sort": 1, "alt": alt}]}
        ]
    }


async def jobs_recorded(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    async with session_scope(sessionmaker) as session:
        return int(await session.scalar(select(func.count()).select_from(SyncJob)) or 0)


def keyed(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


async def test_the_same_key_and_request_answer_with_the_first_job_and_record_nothing(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    sent = body(image_server)
    first = await client.post(SYNC, json=sent, headers=keyed(headers, "k-1"))
    assert first.status_code in (200, 202), first.text
    assert "idempotent-replayed" not in first.headers
    done = await client.post(f"{SYNC}?wait=20", json=sent, headers=keyed(headers, "k-1"))
    assert done.status_code == 200, done.text  # waited for the first job to finish
    assert done.json()["id"] == first.json()["id"]
    assert done.json()["status"] == "succeeded"
    assert done.headers["idempotent-replayed"] == "true"
    # Spacing, key order and the field's other spelling make no other request.
    respelled = json.dumps(sent, indent=2, sort_keys=True)
    as_json = {**keyed(headers, "k-1"), "Content-Type": "application/json"}
    again = await client.post(SYNC, content=respelled, headers=as_json)
    assert again.json()["id"] == first.json()["id"]
    assert await jobs_recorded(sessionmaker) == 1
    # Without a key, or with another, the same request is a new job (and a no-op).
    for extra in ({}, {"Idempotency-Key": "k-2"}):
        other = await client.post(SYNC, json=sent, headers={**headers, **extra})
        assert other.json()["id"] != first.json()["id"]
    assert await jobs_recorded(sessionmaker) == 3


async def test_the_same_key_with_another_request_is_refused(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await client.post(f"{SYNC}?wait=20", json=body(image_server), headers=keyed(headers, "k"))
    changed = body(image_server, alt="back")
    answer = await client.post(SYNC, json=changed, headers=keyed(headers, "k"))
    assert answer.status_code == 422, answer.text
    (error,) = answer.json()["errors"]
    assert error["code"] == "idempotency_key_reused"
    assert error["source"] == {"header": "Idempotency-Key"}
    assert await jobs_recorded(sessionmaker) == 1


async def test_concurrent_requests_with_one_key_record_one_job(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    sent = body(image_server)
    answers = await asyncio.gather(
        *(client.post(SYNC, json=sent, headers=keyed(headers, "same")) for _ in range(6))
    )
    assert all(a.status_code in (200, 202) for a in answers), [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 5
    assert await jobs_recorded(sessionmaker) == 1


async def test_keys_are_each_accounts_own_and_expire(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    sent = body(image_server)
    first = (await client.post(SYNC, json=sent, headers=keyed(headers, "k"))).json()
    other = await create_account(sessionmaker, "other")
    await create_tshirt(client, other)
    theirs = (await client.post(SYNC, json=sent, headers=keyed(other, "k"))).json()
    assert theirs["id"] != first["id"]
    # 25 hours later the key may be used again, with any request.
    async with session_scope(sessionmaker) as session:
        await session.execute(
            update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=25))
        )
    later = await client.post(
        SYNC, json=body(image_server, alt="back"), headers=keyed(headers, "k")
    )
    assert later.status_code in (200, 202), later.text
    assert later.json()["id"] not in (first["id"], theirs["id"])
    assert "idempotent-replayed" not in later.headers


async def test_a_refused_request_leaves_its_key_unused(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    bad = {"products": [{"item_number": "cool-product-001", "images": [{"url": "x", "sort": 1}]}]}
    assert (await client.post(SYNC, json=bad, headers=keyed(headers, "k"))).status_code == 422
    unknown = {
        "products": [
            {
                "item_number": "cool-product-001",
                "images": [
                    {"url": image_server.add("a.jpg"), "sort": 1},
                    {"url": image_server.add("a.jpg"), "sort": 2},  # the same URL twice
                ],
            }
        ]
    }
    assert (await client.post(SYNC, json=unknown, headers=keyed(headers, "k"))).status_code == 422
    planned = await client.post(
        f"{SYNC}?dry_run=true", json=body(image_server, alt="plan"), headers=keyed(headers, "k")
    )
    assert planned.status_code == 200
    good = await client.post(SYNC, json=body(image_server), headers=keyed(headers, "k"))
    assert good.status_code in (200, 202), good.text
    assert "idempotent-replayed" not in good.headers
    async with session_scope(sessionmaker) as session:
        kept = await session.scalar(select(IdempotencyKey.job_id))
    assert kept == good.json()["id"]


async def test_keys_past_their_lifetime_are_forgotten_hourly(
    app: Any,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    for key in ("old", "new"):
        await client.post(SYNC, json=body(image_server), headers=keyed(headers, key))
    async with session_scope(sessionmaker) as session:
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == "old")
            .values(created_at=utcnow() - timedelta(hours=24, minutes=1))
        )
    task = tasks().by_name["maintenance.forget_idempotency_keys"]
    assert task.cron == "27 * * * *"
    await task.function(Attempt(1, 1, resources(app.state.sync_context, app.state.settings)))
    async with session_scope(sessionmaker) as session:
        left = (await session.scalars(select(IdempotencyKey.key))).all()
    assert left == ["new"]


@pytest.mark.parametrize("key", ["", "x" * 256])
async def test_a_key_is_one_to_255_characters(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer, key: str
) -> None:
    answer = await client.post(SYNC, json=body(image_server), headers=keyed(headers, key))
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["source"] == {"header": "Idempotency-Key"}


async def test_a_timed_out_retry_of_the_client_records_one_job(
    tmp_path: Path, database_env: dict[str, str], image_server: ImageServer
) -> None:
    """Against a real `serve`: the client gives up on an answer the server holds (`wait`
    on a slow origin), sends the request again with its key, and gets the same job."""
    port = image_server.base.rsplit(":", 1)[1]
    env = {**clean_env(), **database_env, "IMAGESYNC_FETCH_ALLOW": f"127.0.0.1:{port}"}
    subprocess.run(
        [sys.executable, "-m", "imagesync", "migrate"], cwd=tmp_path, env=env, check=True
    )
    token = create_token(tmp_path, env)
    slow = image_server.add("slow.jpg", delay=3.0)
    with serve(tmp_path, env) as base:
        products = [{"item_number": "cool-product-001", "images": [{"url": slow, "sort": 1}]}]

        async def push() -> tuple[list[str], str, int]:
            async with AsyncClient(base, token, timeout=1.0, retries=8) as api:
                await api.sync_products([{"item_number": "cool-product-001", "variants": []}])
                sent: list[str] = []
                original = api._http.send

                async def recording(request: httpx.Request, **kwargs: Any) -> httpx.Response:
                    if request.method == "POST" and request.url.path == SYNC:
                        sent.append(request.headers["Idempotency-Key"])
                    return await original(request, **kwargs)

                api._http.send = recording  # type: ignore[method-assign]
                try:
                    job = await api.sync_images(products, wait=10)
                except ConnectionFailed:
                    pytest.fail("every try timed out: the server never answered in time")
            engine = create_engine(normalize_database_url(env["IMAGESYNC_DATABASE_URL"]))
            try:
                async with engine.connect() as connection:
                    recorded = await connection.scalar(select(func.count()).select_from(SyncJob))
            finally:
                await engine.dispose()
            return sent, job.id, int(recorded or 0)

        sent, job_id, recorded = await push()
    assert len(sent) >= 2, sent  # the first try timed out, and was sent again
    assert len(set(sent)) == 1, sent  # with its one key
    assert uuid.UUID(sent[0])
    assert recorded == 1
    assert job_id
