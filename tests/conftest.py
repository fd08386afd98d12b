"""Fixtures: every database-facing test runs on SQLite and on a real PostgreSQL.

PostgreSQL: a database of its own per test run, created here and dropped at the end
(`TEST_POSTGRES_URL` names the server's admin database). With no server reachable those
tests are skipped with the reason, unless `TEST_REQUIRE_POSTGRES=1` (set by .ci/run)
turns the skip into a failure.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import ipaddress
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.app import create_app
from imagesync.fetch.guard import is_forbidden
from imagesync.kit.clock import Clock
from imagesync.kit.clock import clock as service_clock
from imagesync.kit.db import Base, migrate
from imagesync.kit.settings import Settings
from imagesync.storage.store import S3Options

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("TEST_REQUIRE_POSTGRES") == "1"


def _with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file; each test gets a copy, which is faster than migrating."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    migrate(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated PostgreSQL database of this test run's own, dropped afterwards."""
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}"
        if REQUIRE_POSTGRES:
            pytest.fail(message)
        pytest.skip(message)
    name = f"imagesync_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        url = _with_database(POSTGRES_ADMIN_URL, name)
        try:
            migrate(url.replace("postgresql://", "postgresql+psycopg://", 1))
            yield url
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# procrastinate's tables: serve runs its worker on PostgreSQL, and a job left by one test
# must not run in the next one's database.
PROCRASTINATE_TABLES = (
    "procrastinate_jobs",
    "procrastinate_workers",
    "procrastinate_periodic_defers",
)


def _truncate_postgres(url: str) -> None:
    names = [t.name for t in Base.metadata.sorted_tables] + list(PROCRASTINATE_TABLES)
    tables = ", ".join(f'"{name}"' for name in names)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """An empty, migrated database of each kind, as an async SQLAlchemy URL."""
    if request.param == "sqlite":
        path = tmp_path / "imagesync.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("postgres_url")
    _truncate_postgres(url)
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """An empty database of each kind, as the environment a served process reads."""
    if request.param == "sqlite":
        return {"IMAGESYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'imagesync.db'}"}
    url: str = request.getfixturevalue("postgres_url")
    _truncate_postgres(url)
    return {"IMAGESYNC_DATABASE_URL": url}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        storage_url=str(tmp_path / "files"),
        worker_shutdown_grace_seconds=0.5,
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
def sessionmaker(app: FastAPI) -> async_sessionmaker[AsyncSession]:
    maker: async_sessionmaker[AsyncSession] = app.state.sessionmaker
    return maker


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    # raise_app_exceptions=False: a 500 is asserted as the response a client would get.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://imagesync.test") as c:
        yield c


@dataclass(frozen=True)
class S3Server:
    """moto's S3-compatible server, on 127.0.0.1 for the whole run."""

    endpoint: str
    options: S3Options

    def new_bucket(self) -> str:
        import boto3

        name = f"imagesync-{uuid.uuid4().hex[:12]}"
        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.options.access_key_id,
            aws_secret_access_key=self.options.secret_access_key,
            region_name=self.options.region,
        ).create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    assert host == "127.0.0.1", host
    yield S3Server(
        endpoint,
        S3Options(
            endpoint=endpoint, region="us-east-1", access_key_id="test", secret_access_key="test"
        ),
    )
    server.stop()


@dataclass
class Tripwire:
    """Every address the process tried to connect to while armed."""

    attempts: list[tuple[str, int]] = field(default_factory=list)

    def forbidden_attempts(self) -> list[tuple[str, int]]:
        return [a for a in self.attempts if is_forbidden(ipaddress.ip_address(a[0]))]

    def hosts(self) -> set[str]:
        return {a[0] for a in self.attempts}


@pytest.fixture
def tripwire(monkeypatch: pytest.MonkeyPatch) -> Tripwire:
    """Record each socket connect; refuse (without any packet) all but loopback, so no
    test can ever reach another address even if the code under test is wrong."""
    wire = Tripwire()
    loop_class = asyncio.selector_events.BaseSelectorEventLoop
    original = loop_class.sock_connect

    async def sock_connect(self: Any, sock: socket.socket, address: Any) -> None:
        host, port = address[0], address[1]
        wire.attempts.append((host, port))
        if not ipaddress.ip_address(host).is_loopback:
            raise ConnectionRefusedError(f"tripwire: tests never connect to {host}")
        await original(self, sock, address)

    monkeypatch.setattr(loop_class, "sock_connect", sock_connect)
    return wire


@pytest.fixture
def clock() -> Iterator[Clock]:
    """The service's clock, to move forward in this test (put back afterwards)."""
    yield service_clock
    service_clock.reset()
