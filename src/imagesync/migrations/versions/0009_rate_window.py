"""rate limit counts, shared by every process on PostgreSQL

One row per key and window of each limit. Unlogged on PostgreSQL: a count lost in a
crash only forgives a minute's requests, and no write-ahead log is spent on it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_window",
        sa.Column("bucket", sa.String(length=200), nullable=False),
        sa.Column("start", sa.BigInteger(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "start", name=op.f("pk_rate_window")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE rate_window SET UNLOGGED")


def downgrade() -> None:
    op.drop_table("rate_window")
