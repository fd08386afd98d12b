"""indexes for /metrics: jobs by their creation, job products by their end

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_sync_job_created_at", "sync_job", ["created_at"], unique=False)
    op.create_index(
        "ix_sync_job_product_finished_at", "sync_job_product", ["finished_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_sync_job_product_finished_at", table_name="sync_job_product")
    op.drop_index("ix_sync_job_created_at", table_name="sync_job")
