"""procrastinate's job queue schema (PostgreSQL only)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

procrastinate keeps its jobs in tables of their own beside the service's, so that a job
can be inserted in the very transaction that records its work. This applies the schema
of the procrastinate release pinned in pyproject.toml; moving to a newer release is a
new revision that runs that release's migration files (procrastinate/sql/migrations).
SQLite databases run the embedded queue and get nothing here.
"""

from collections.abc import Sequence

from alembic import op
from procrastinate.schema import SchemaManager

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    present = bind.exec_driver_sql("SELECT to_regclass('procrastinate_jobs')").scalar()
    if present is None:  # an operator may have applied it with procrastinate's own CLI
        # exec_driver_sql goes through psycopg's placeholders: a literal % is written %%.
        bind.exec_driver_sql(SchemaManager.get_schema().replace("%", "%%"))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    bind.exec_driver_sql(
        "DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers, "
        "procrastinate_jobs, procrastinate_workers CASCADE"
    )
    for name, kind in bind.exec_driver_sql(
        "SELECT p.oid::regprocedure::text, 'FUNCTION' FROM pg_proc p "
        "WHERE p.proname LIKE 'procrastinate%' "
        "UNION ALL SELECT t.typname, 'TYPE' FROM pg_type t "
        "WHERE t.typname LIKE 'procrastinate%' AND t.typtype IN ('e', 'c')"
    ).all():
        bind.exec_driver_sql(f"DROP {kind} IF EXISTS {name} CASCADE")
