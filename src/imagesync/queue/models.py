"""The local runner's jobs (SQLite; procrastinate keeps its own tables on PostgreSQL)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from imagesync.kit.db import Base, UTCDateTime


class QueueJob(Base):
    """A deferred task: `todo` until it runs (not before `run_after`), `doing` while it
    runs, deleted when it succeeds, `failed` (with its error) after its last attempt."""

    __tablename__ = "queue_job"
    __table_args__ = (Index("ix_queue_job_todo", "queue", "status", "run_after"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task: Mapped[str] = mapped_column(String(100))
    queue: Mapped[str] = mapped_column(String(50))
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    lock: Mapped[str | None] = mapped_column(String(255), index=True)
    share: Mapped[str | None] = mapped_column(String(255))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(10), default="todo")
    failures: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[datetime] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text, default=None)
