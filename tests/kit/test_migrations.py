"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

import imagesync.models  # noqa: F401  (every table on Base.metadata)
from imagesync.kit.db import Base, migrate
from tests.conftest import POSTGRES_ADMIN_URL


def test_the_migrations_make_the_models_schema(tmp_path: Path) -> None:
    path = tmp_path / "schema.db"
    migrate(f"sqlite+aiosqlite:///{path}")
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []


OLD_WORK = [
    "INSERT INTO account (id, name, created_at) VALUES (1, 'acme', '2026-11-01 00:00:00')",
    "INSERT INTO sync_job (id, account_id, created_at) VALUES ('j1', 1, '2026-11-01 00:00:00')",
    "INSERT INTO sync_job_product (job_id, account_id, position, item_number, status, request, "
    "attempts) VALUES ('j1', 1, 0, 'p-1', 'queued', '{}', 0), ('j1', 1, 1, 'p-2', 'running', "
    "'{}', 1), ('j1', 1, 2, 'p-3', 'succeeded', '{}', 1)",
    "INSERT INTO blob (id, sha256, size, content_type, width, height, storage_key, created_at) "
    "VALUES (7, 'ab', 1, 'image/jpeg', 900, 600, 'ab.jpg', '2026-11-01 00:00:00')",
    "INSERT INTO rendition (blob_id, width, state, attempts, created_at, updated_at) VALUES "
    "(7, 200, 'pending', 0, '2026-11-01 00:00:00', '2026-11-01 00:00:00'), "
    "(7, 400, 'ready', 1, '2026-11-01 00:00:00', '2026-11-01 00:00:00')",
]


def test_work_the_old_embedded_queue_held_becomes_jobs(tmp_path: Path) -> None:
    """Before 0010 the embedded queue was the domain rows themselves: an upgrade with
    products and renditions still waiting turns each into a job of the local runner."""
    path = tmp_path / "upgrade.db"
    migrate(f"sqlite+aiosqlite:///{path}", "0009")
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        for statement in OLD_WORK:
            connection.exec_driver_sql(statement)
    migrate(f"sqlite+aiosqlite:///{path}")
    with engine.connect() as connection:
        jobs = connection.exec_driver_sql(
            "SELECT task, queue, args, lock, share, status FROM queue_job ORDER BY id"
        ).all()
    engine.dispose()
    assert [(task, queue, json.loads(args), *rest) for task, queue, args, *rest in jobs] == [
        ("sync.run_product", "sync", {"seq": 1}, "product:1:p-1", "account:1", "todo"),
        ("sync.run_product", "sync", {"seq": 2}, "product:1:p-2", "account:1", "todo"),
        ("media.render_blob", "renditions", {"blob_id": 7}, "blob:7", None, "todo"),
    ]


@pytest.mark.postgres
def test_on_postgresql_the_old_embedded_work_becomes_procrastinate_jobs(
    postgres_url: str,
) -> None:
    """The same upgrade on PostgreSQL queues procrastinate's jobs instead, skipping work a
    procrastinate deployment had queued already."""
    admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True)
    name = f"imagesync_upgrade_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = postgres_url.rsplit("/", 1)[0] + "/" + name
    try:
        async_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
        migrate(async_url, "0009")
        with psycopg.connect(url, autocommit=True) as connection:
            for statement in OLD_WORK:
                connection.execute(statement.replace("'{}'", "'{}'::json"))
            connection.execute(  # queued by a procrastinate deployment already
                "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args) VALUES "
                """('sync', 'sync.run_product', 'product:1:p-2', '{"seq": 2}')"""
            )
        migrate(async_url)
        with psycopg.connect(url) as connection:
            jobs = connection.execute(
                "SELECT task_name, queue_name, args, lock, priority, status::text "
                "FROM procrastinate_jobs ORDER BY id"
            ).fetchall()
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    assert jobs == [
        ("sync.run_product", "sync", {"seq": 2}, "product:1:p-2", 0, "todo"),
        ("sync.run_product", "sync", {"seq": 1}, "product:1:p-1", 0, "todo"),
        ("media.render_blob", "renditions", {"blob_id": 7}, "blob:7", -10, "todo"),
    ]


FETCH_LOCK_CHECK = (
    "EXPLAIN (FORMAT JSON) SELECT 1 FROM procrastinate_jobs AS other_jobs "
    "WHERE other_jobs.lock = 'product:1:p-999' "
    "AND other_jobs.status IN ('todo', 'doing')"
)


@pytest.mark.postgres
def test_procrastinate_jobs_of_a_lock_are_found_by_an_index_of_their_lock(
    postgres_url: str,
) -> None:
    """A worker's take checks the other jobs of each candidate's lock: with thousands of
    jobs waiting, that is a lookup in an index of the lock, not a read of the whole
    `(id, lock)` index (docs/benchmarks.md)."""
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        definition = connection.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s",
            ("imagesync_procrastinate_jobs_lock",),
        ).fetchone()
        assert definition is not None
        assert "(lock)" in definition[0]
        with connection.transaction(force_rollback=True):
            connection.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args) "
                "SELECT 'sync', 'sync.run_product', 'product:1:p-' || g, '{}' "
                "FROM generate_series(1, 5000) AS g"
            )
            connection.execute("ANALYZE procrastinate_jobs")
            (plan,) = connection.execute(FETCH_LOCK_CHECK).fetchone()  # type: ignore[misc]
    assert "imagesync_procrastinate_jobs_lock" in json.dumps(plan)
