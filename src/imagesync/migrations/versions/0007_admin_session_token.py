"""admin sessions name the API token they were opened with

A session ends when its token is revoked. Sessions opened before this revision name no
token: they are ended (their users sign in again).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DELETE FROM admin_session")
    with op.batch_alter_table("admin_session", schema=None) as batch_op:
        batch_op.add_column(sa.Column("api_token_id", sa.Integer(), nullable=False))
        batch_op.create_foreign_key(
            batch_op.f("fk_admin_session_api_token_id_api_token"),
            "api_token",
            ["api_token_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_index(batch_op.f("ix_admin_session_api_token_id"), ["api_token_id"])


def downgrade() -> None:
    with op.batch_alter_table("admin_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_admin_session_api_token_id"))
        batch_op.drop_constraint(
            batch_op.f("fk_admin_session_api_token_id_api_token"), type_="foreignkey"
        )
        batch_op.drop_column("api_token_id")
