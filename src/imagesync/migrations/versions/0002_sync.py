"""sync: blobs, sources, images, jobs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 03:34:25.325683
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blob",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(length=50), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("storage_key", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blob")),
        sa.UniqueConstraint("sha256", name=op.f("uq_blob_sha256")),
    )
    op.create_table(
        "source",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("identity_kind", sa.String(length=20), nullable=False),
        sa.Column("identity", sa.Text(), nullable=False),
        sa.Column("identity_hash", sa.String(length=64), nullable=False),
        sa.Column("blob_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_source_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["blob_id"], ["blob.id"], name=op.f("fk_source_blob_id_blob")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_source")),
        sa.UniqueConstraint(
            "account_id", "identity_hash", name=op.f("uq_source_account_id_identity_hash")
        ),
    )
    with op.batch_alter_table("source", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_source_blob_id"), ["blob_id"], unique=False)

    op.create_table(
        "sync_job",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_sync_job_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_job")),
    )
    with op.batch_alter_table("sync_job", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sync_job_account_id"), ["account_id"], unique=False)

    op.create_table(
        "image",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("blob_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("existance_key", sa.Text(), nullable=True),
        sa.Column("sort", sa.Integer(), nullable=False),
        sa.Column("sort_b2c", sa.Integer(), nullable=True),
        sa.Column("alt", sa.Text(), nullable=True),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("custom_filename", sa.String(length=255), nullable=True),
        sa.Column("attach_rule", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["blob_id"], ["blob.id"], name=op.f("fk_image_blob_id_blob")),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["product.id"],
            name=op.f("fk_image_product_id_product"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_id"], ["source.id"], name=op.f("fk_image_source_id_source")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image")),
        sa.UniqueConstraint("product_id", "source_id", name=op.f("uq_image_product_id_source_id")),
    )
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_image_blob_id"), ["blob_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_image_product_id"), ["product_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_image_source_id"), ["source_id"], unique=False)

    op.create_table(
        "sync_job_product",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("item_number", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_sync_job_product_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["sync_job.id"],
            name=op.f("fk_sync_job_product_job_id_sync_job"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_sync_job_product")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("sync_job_product", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sync_job_product_item", ["account_id", "item_number", "seq"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_sync_job_product_job_id"), ["job_id"], unique=False)
        batch_op.create_index(
            "ix_sync_job_product_pending", ["status", "lease_expires_at"], unique=False
        )

    op.create_table(
        "image_variant",
        sa.Column("image_id", sa.String(length=32), nullable=False),
        sa.Column("variant_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["image.id"],
            name=op.f("fk_image_variant_image_id_image"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["variant_id"],
            ["variant.id"],
            name=op.f("fk_image_variant_variant_id_variant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("image_id", "variant_id", name=op.f("pk_image_variant")),
    )
    with op.batch_alter_table("image_variant", schema=None) as batch_op:
        batch_op.create_index("ix_image_variant_variant", ["variant_id"], unique=False)

    with op.batch_alter_table("product", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last_applied_seq", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("product", schema=None) as batch_op:
        batch_op.drop_column("last_applied_seq")

    with op.batch_alter_table("image_variant", schema=None) as batch_op:
        batch_op.drop_index("ix_image_variant_variant")

    op.drop_table("image_variant")
    with op.batch_alter_table("sync_job_product", schema=None) as batch_op:
        batch_op.drop_index("ix_sync_job_product_pending")
        batch_op.drop_index(batch_op.f("ix_sync_job_product_job_id"))
        batch_op.drop_index("ix_sync_job_product_item")

    op.drop_table("sync_job_product")
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_image_source_id"))
        batch_op.drop_index(batch_op.f("ix_image_product_id"))
        batch_op.drop_index(batch_op.f("ix_image_blob_id"))

    op.drop_table("image")
    with op.batch_alter_table("sync_job", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sync_job_account_id"))

    op.drop_table("sync_job")
    with op.batch_alter_table("source", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_source_blob_id"))

    op.drop_table("source")
    op.drop_table("blob")
