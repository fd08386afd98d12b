"""a partial index of the job entries still to finish

A submission asks, for each product it names, whether an earlier sync of it is still to
finish. The products' entries pile up (one a night for the nightly re-send), so that
question reads an index of the unfinished ones only, whose size is the queue's.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    op.create_index(
        "ix_sync_job_product_unfinished",
        "sync_job_product",
        ["account_id", "item_number"],
        sqlite_where=UNFINISHED,
        postgresql_where=UNFINISHED,
    )


def downgrade() -> None:
    op.drop_index("ix_sync_job_product_unfinished", table_name="sync_job_product")
