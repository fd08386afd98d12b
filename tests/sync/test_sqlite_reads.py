"""SQLite: the API's reads (a job, a product, its images, the token) run on read-only
connections beside the one writer, so that none waits for a write in progress, or for
another read, on the writer's connection."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from imagesync.kit.db import session_scope


@pytest.fixture
def sqlite_only(database_url: str) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL has a pool of connections: reads never queue behind one")


@pytest.mark.usefixtures("sqlite_only")
async def test_a_read_does_not_wait_for_a_write_in_progress(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """The writer's one connection held by an unfinished write (a product's run, say): a
    read answers at once, from what was committed."""
    async with app.state.sessionmaker() as writer:
        await writer.execute(text("UPDATE product SET name = 'being changed'"))
        async with asyncio.timeout(5):  # it would wait 60 s for the writer's connection
            answer = await client.get("/products/cool-product-001", headers=headers)
            images = await client.get("/products/cool-product-001/images", headers=headers)
        await writer.rollback()
    assert answer.status_code == 200, answer.text
    assert answer.json()["name"] != "being changed"  # only what is committed is read
    assert images.status_code == 200, images.text


@pytest.mark.usefixtures("sqlite_only")
async def test_the_readers_cannot_write(app: FastAPI) -> None:
    with pytest.raises(OperationalError, match="readonly"):
        async with session_scope(app.state.read_sessionmaker) as session:
            await session.execute(text("UPDATE product SET name = 'x'"))
