"""Stored bytes and their renditions. Which rows use a blob is told by the domains that
use it (see `context.BlobUsers`); storage itself knows none of them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from imagesync.kit.db import Base, UTCDateTime, utcnow


class Blob(Base):
    """Stored bytes, content-addressed: one row and one file per distinct sha256."""

    __tablename__ = "blob"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(50))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When a sync last planned to use it or an image let go of it; the collector
    # deletes a blob no image uses once this is older than the grace period.
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=utcnow)
    # Set when the collector has started deleting it: no longer handed out.
    collecting_since: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class Rendition(Base):
    """A smaller WebP copy of a blob at one width, pending until its blob's task makes it."""

    __tablename__ = "rendition"
    __table_args__ = (
        UniqueConstraint("blob_id", "width"),
        Index("ix_rendition_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    blob_id: Mapped[int] = mapped_column(ForeignKey("blob.id", ondelete="CASCADE"))
    width: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(10))  # pending | ready | failed
    height: Mapped[int | None] = mapped_column(Integer, default=None)
    size: Mapped[int | None] = mapped_column(BigInteger, default=None)
    storage_key: Mapped[str | None] = mapped_column(String(200), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
