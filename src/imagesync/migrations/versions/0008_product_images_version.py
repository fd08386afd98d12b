"""a version of each product's images and variants

Bumped whenever a sync applies to the product or the catalog changes its variants or
codes: a product's run plans once, and re-plans at apply only when it moved.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("product") as batch:
        batch.add_column(
            sa.Column("images_version", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("product") as batch:
        batch.drop_column("images_version")
