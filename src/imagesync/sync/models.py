"""Image sync's tables: what each account has seen, its products' images, and jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ColumnElement,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    exists,
    false,
    text,
)
from sqlalchemy.orm import InstrumentedAttribute, Mapped, mapped_column, relationship

from imagesync.kit.db import Base, UTCDateTime, utcnow
from imagesync.storage.context import BlobUsers
from imagesync.storage.models import Blob


class Source(Base):
    """The account's "seen before" memory: an identity (URL or existance_key) that was
    downloaded once, and the blob it gave. A known identity is never downloaded again,
    unless a sync asks to refresh it: then its origin is asked, with the validators it
    sent (`etag`, `last_modified`), whether the bytes changed, and a source whose bytes
    did points to the new blob from then on."""

    __tablename__ = "source"
    __table_args__ = (UniqueConstraint("account_id", "identity_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    identity_kind: Mapped[str] = mapped_column(String(20))
    # URLs can be longer than an index entry may be; uniqueness is on the hash.
    identity: Mapped[str] = mapped_column(Text)
    identity_hash: Mapped[str] = mapped_column(String(64))
    blob_id: Mapped[int] = mapped_column(ForeignKey("blob.id"), index=True)
    url: Mapped[str] = mapped_column(Text)  # the URL it was downloaded from
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # What the origin said of the blob's bytes, for a conditional GET when refreshed.
    etag: Mapped[str | None] = mapped_column(Text, default=None)
    last_modified: Mapped[str | None] = mapped_column(String(64), default=None)
    length: Mapped[int | None] = mapped_column(BigInteger, default=None)

    blob: Mapped[Blob] = relationship(lazy="raise")


class Image(Base):
    __tablename__ = "image"
    __table_args__ = (UniqueConstraint("product_id", "source_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    product_id: Mapped[int] = mapped_column(
        ForeignKey("product.id", ondelete="CASCADE"), index=True
    )
    source_id: Mapped[int] = mapped_column(ForeignKey("source.id"), index=True)
    blob_id: Mapped[int] = mapped_column(ForeignKey("blob.id"), index=True)
    url: Mapped[str] = mapped_column(Text)
    existance_key: Mapped[str | None] = mapped_column(Text, default=None)
    sort: Mapped[int] = mapped_column(Integer)
    sort_b2c: Mapped[int | None] = mapped_column(Integer, default=None)
    alt: Mapped[str | None] = mapped_column(Text, default=None)
    filename: Mapped[str] = mapped_column(String(255))
    custom_filename: Mapped[str | None] = mapped_column(String(255), default=None)
    attach_rule: Mapped[dict[str, str] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    source: Mapped[Source] = relationship(lazy="raise")
    blob: Mapped[Blob] = relationship(lazy="raise")
    variant_links: Mapped[list[ImageVariant]] = relationship(
        lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )


class ImageVariant(Base):
    """An image attached to a variant; derived from the image's rule and the variants."""

    __tablename__ = "image_variant"
    __table_args__ = (Index("ix_image_variant_variant", "variant_id"),)

    image_id: Mapped[str] = mapped_column(
        ForeignKey("image.id", ondelete="CASCADE"), primary_key=True
    )
    variant_id: Mapped[int] = mapped_column(
        ForeignKey("variant.id", ondelete="CASCADE"), primary_key=True
    )


class SyncJob(Base):
    __tablename__ = "sync_job"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # Whether its account had a webhook when it was recorded: only then does the end of
    # each product look for the job's end (`webhooks.events`).
    notify: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # No status column: a job's status is derived from its products, so two products
    # finishing at once cannot leave it stale.

    products: Mapped[list[SyncJobProduct]] = relationship(
        lazy="raise", order_by="SyncJobProduct.position", back_populates="job"
    )


# Written out, not bound: a partial index serves only a query that says the same.
UNFINISHED = text("status IN ('queued', 'running')")


class SyncJobProduct(Base):
    """One product of a job. `seq` orders a product's syncs in submission order."""

    __tablename__ = "sync_job_product"
    __table_args__ = (
        Index("ix_sync_job_product_status", "status"),
        Index("ix_sync_job_product_item", "account_id", "item_number", "seq"),
        # Whether a product has a sync still to finish reads only those (migration 0011).
        Index(
            "ix_sync_job_product_unfinished",
            "account_id",
            "item_number",
            sqlite_where=UNFINISHED,
            postgresql_where=UNFINISHED,
        ),
        # The last day's ends, as `/metrics` and `imagesync queue` count them (0014).
        Index("ix_sync_job_product_finished_at", "finished_at"),
        # seq must never be reused: SQLite would otherwise hand out a deleted max again.
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("sync_job.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    item_number: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(20))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    job: Mapped[SyncJob] = relationship(lazy="raise", back_populates="products")


class IdempotencyKey(Base):
    """An `Idempotency-Key` an account sent with a sync: the job it recorded, and a
    digest of the request it came with. The same key and request within the key's
    lifetime answer with that job again."""

    __tablename__ = "idempotency_key"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_digest: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Webhook(Base):
    """An endpoint of an account, called with the events it subscribed to. Disabled when
    a delivery to it still failed after its last retry; enabled again by its account."""

    __tablename__ = "webhook"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(64))  # `whsec_` + base64; signs each call
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    disabled_reason: Mapped[str | None] = mapped_column(Text, default=None)


class WebhookDelivery(Base):
    """One event sent to one endpoint: `pending` while it is to be tried (again),
    `delivered` once the endpoint answered 2xx, `failed` after its last attempt. Its id
    is the `webhook-id` of every attempt, so that a receiver can drop what it has seen."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (Index("ix_webhook_delivery_webhook", "webhook_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # `msg_` + hex
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhook.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(50))
    job_id: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int | None] = mapped_column(Integer, default=None)  # the product, if one
    # The body, made at the first attempt (the job is finished: it no longer changes).
    body: Mapped[str | None] = mapped_column(Text, default=None)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    # Why it failed: no 2xx after its last attempt, or its endpoint was disabled first.
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


def _source_of_images(blob_id: InstrumentedAttribute[int]) -> ColumnElement[bool]:
    """The blob is the bytes of a source that some image comes from. Refreshed for one
    product, a source points to the new bytes while another product's image of it may
    still hold the old: the source, and so its blob, must outlive that image."""
    return exists().where(Source.blob_id == blob_id, exists().where(Image.source_id == Source.id))


# Images keep their blobs alive, and the blobs of the sources they come from; a source
# only remembers its blob otherwise, and goes with it, so that a URL sent again after its
# blob was collected is downloaded again.
BLOB_USERS = BlobUsers(
    holders=(Image.blob_id,), dependents=(Source.blob_id,), held_if=(_source_of_images,)
)
