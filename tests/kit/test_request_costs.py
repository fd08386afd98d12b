"""What every request or process pays for, kept out: a dependency run in FastAPI's thread
pool, the collector's full passes over what a process made to start, and the standard
library's JSON for the JSON columns."""

from __future__ import annotations

import gc
import inspect
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy import JSON, Column, Integer, MetaData, Table, select, text

from imagesync.app import create_app
from imagesync.kit.db import create_engine
from imagesync.kit.settings import Settings
from imagesync.serving import api_app


def _api_routes(routes: Sequence[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (router := getattr(route, "original_router", None)) is not None:
            yield from _api_routes(router.routes)  # an included router
        elif hasattr(route, "routes"):
            yield from _api_routes(route.routes)


def _calls(dependant: Dependant) -> list[Any]:
    found = []
    for sub in dependant.dependencies:
        found.append(sub.call)
        found += _calls(sub)
    return found


def _on_the_loop(call: Any) -> bool:
    """Whether FastAPI awaits `call` rather than sending it to its thread pool."""
    target = call if inspect.isfunction(call) else type(call).__call__
    return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)


def test_every_dependency_runs_on_the_event_loop(tmp_path: Path) -> None:
    """A plain `def` dependency costs each request a trip to another thread and back
    through the loop, for what is an attribute read."""
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}"))
    routes = list(_api_routes(app.routes))
    assert len(routes) > 20
    in_threads = {
        f"{route.path}: {getattr(call, '__qualname__', type(call).__name__)}"
        for route in routes
        for call in _calls(route.dependant)
        if call is not None and not _on_the_loop(call)
    }
    assert not in_threads


async def test_an_api_process_leaves_what_it_made_to_start_to_no_collection(
    tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(sqlite_template, tmp_path / "imagesync.db")
    monkeypatch.setenv("IMAGESYNC_DATABASE_URL", f"sqlite:///{tmp_path / 'imagesync.db'}")
    monkeypatch.setenv("IMAGESYNC_STORAGE_URL", str(tmp_path / "files"))
    gc.unfreeze()
    app = api_app()
    try:
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()


@pytest.mark.parametrize(
    "value",
    [
        {"alt": "Rød kjole, forside", "rule": {"Farve": "100"}},
        {"n": [1, 2.5, -3, None, True, 10**18], "nested": {"a": [{"b": "日本"}]}},
        ["a", {"b": None}],
        "plain",
    ],
)
async def test_json_columns_read_back_what_was_written(database_url: str, value: Any) -> None:
    engine = create_engine(database_url)
    table = Table(
        "json_round_trip",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("doc", JSON),
    )
    try:
        async with engine.begin() as connection:
            await connection.run_sync(table.create)
            await connection.execute(table.insert(), {"id": 1, "doc": value})
            assert (await connection.execute(select(table.c.doc))).scalar_one() == value
            # Stored as JSON any other reader parses (PostgreSQL's driver parses it itself).
            raw = (await connection.execute(text("SELECT doc FROM json_round_trip"))).scalar_one()
            assert (json.loads(raw) if database_url.startswith("sqlite") else raw) == value
            await connection.run_sync(table.drop)
    finally:
        await engine.dispose()
