"""procrastinate's waiting and running jobs found by their lock (PostgreSQL only)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02

A worker taking a job (`procrastinate_fetch_job_v2`) first checks that no earlier job of
the candidate's lock waits or runs. procrastinate's own indexes find those jobs through
`(id, lock)`, reading the whole index for each candidate: with thousands of jobs waiting
(a first import of a thousand products, and the renditions queued behind it), every
take read them all, and PostgreSQL's CPU per image grew fivefold from 200 to 1,000
products (docs/benchmarks.md, the targets of 2026-12-02, night). A partial index on
`lock` makes that check a lookup.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "imagesync_procrastinate_jobs_lock"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    if bind.exec_driver_sql("SELECT to_regclass('procrastinate_jobs')").scalar() is None:
        return
    bind.exec_driver_sql(
        f"CREATE INDEX IF NOT EXISTS {INDEX} ON procrastinate_jobs (lock) "
        "WHERE status IN ('todo', 'doing')"
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    bind.exec_driver_sql(f"DROP INDEX IF EXISTS {INDEX}")
