"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

import imagesync.models  # noqa: F401  (every table on Base.metadata)
from imagesync.kit.db import Base, migrate


def test_the_migrations_make_the_models_schema(tmp_path: Path) -> None:
    path = tmp_path / "schema.db"
    migrate(f"sqlite+aiosqlite:///{path}")
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []
