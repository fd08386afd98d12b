"""the queue owns execution: the local runner's jobs; domain rows lose their lease columns

`queue_job` holds the jobs of the runner `serve` uses on SQLite (procrastinate keeps its
own on PostgreSQL). Products of sync jobs and renditions keep their domain state only:
their attempts, leases and runner columns go. Unfinished work that was queued in those
columns (the old embedded mode) becomes a job, so nothing waiting is lost.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from imagesync.kit.clock import utcnow
from imagesync.kit.db import UTCDateTime

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUN_PRODUCT = "sync.run_product"
RENDER_BLOB = "media.render_blob"


def upgrade() -> None:
    queue_job = op.create_table(
        "queue_job",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task", sa.String(length=100), nullable=False),
        sa.Column("queue", sa.String(length=50), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("lock", sa.String(length=255), nullable=True),
        sa.Column("share", sa.String(length=255), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("run_after", UTCDateTime(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_job")),
    )
    with op.batch_alter_table("queue_job", schema=None) as batch_op:
        batch_op.create_index("ix_queue_job_todo", ["queue", "status", "run_after"], unique=False)
        batch_op.create_index(batch_op.f("ix_queue_job_lock"), ["lock"], unique=False)

    _queue_unfinished(queue_job)

    with op.batch_alter_table("sync_job_product", schema=None) as batch_op:
        batch_op.drop_index("ix_sync_job_product_pending")
        batch_op.drop_column("attempts")
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("runner")
        batch_op.create_index("ix_sync_job_product_status", ["status"], unique=False)
    with op.batch_alter_table("rendition", schema=None) as batch_op:
        batch_op.drop_index("ix_rendition_pending")
        batch_op.drop_column("attempts")
        batch_op.drop_column("lease_expires_at")
        batch_op.create_index("ix_rendition_state", ["state"], unique=False)


def _queue_unfinished(queue_job: sa.Table) -> None:
    """A job for each unfinished product and each blob with pending renditions that has
    none yet: in `queue_job` on SQLite, in procrastinate's jobs on PostgreSQL."""
    bind = op.get_bind()
    products = bind.execute(
        sa.text(
            "SELECT seq, account_id, item_number FROM sync_job_product "
            "WHERE status IN ('queued', 'running') ORDER BY seq"
        )
    ).all()
    blobs = bind.execute(
        sa.text("SELECT DISTINCT blob_id FROM rendition WHERE state = 'pending' ORDER BY blob_id")
    ).all()
    jobs = [
        {
            "task": RUN_PRODUCT,
            "queue": "sync",
            "args": {"seq": seq},
            "lock": f"product:{account}:{item}",
            "share": f"account:{account}",
            "priority": 0,
        }
        for seq, account, item in products
    ] + [
        {
            "task": RENDER_BLOB,
            "queue": "renditions",
            "args": {"blob_id": blob_id},
            "lock": f"blob:{blob_id}",
            "share": None,
            "priority": -10,
        }
        for (blob_id,) in blobs
    ]
    if not jobs:
        return
    if bind.dialect.name == "sqlite":
        now = utcnow()
        op.bulk_insert(
            queue_job,
            [{**job, "status": "todo", "failures": 0, "run_after": now} for job in jobs],
        )
        return
    for job in jobs:  # procrastinate mode queued them already; the embedded mode did not
        key = next(iter(job["args"]))
        bind.execute(
            sa.text(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, priority, lock, args) "
                "SELECT CAST(:queue AS varchar), CAST(:task AS varchar), :priority, "
                "CAST(:lock AS varchar), CAST(:args AS jsonb) WHERE NOT EXISTS (SELECT 1 FROM "
                "procrastinate_jobs WHERE task_name = CAST(:task AS varchar) AND status IN "
                "('todo', 'doing') AND args ->> CAST(:key AS text) = CAST(:value AS text))"
            ),
            {
                "queue": job["queue"],
                "task": job["task"],
                "priority": job["priority"],
                "lock": job["lock"],
                "args": json.dumps(job["args"]),
                "key": key,
                "value": str(job["args"][key]),
            },
        )


def downgrade() -> None:
    with op.batch_alter_table("rendition", schema=None) as batch_op:
        batch_op.drop_index("ix_rendition_state")
        batch_op.add_column(
            sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.create_index("ix_rendition_pending", ["state", "lease_expires_at"], unique=False)
    with op.batch_alter_table("sync_job_product", schema=None) as batch_op:
        batch_op.drop_index("ix_sync_job_product_status")
        batch_op.add_column(sa.Column("runner", sa.String(length=100), nullable=True))
        batch_op.add_column(
            sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.create_index(
            "ix_sync_job_product_pending", ["status", "lease_expires_at"], unique=False
        )
    with op.batch_alter_table("queue_job", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_queue_job_lock"))
        batch_op.drop_index("ix_queue_job_todo")
    op.drop_table("queue_job")
