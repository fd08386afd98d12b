from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from imagesync.kit.db import Base, UTCDateTime, utcnow


class Account(Base):
    __tablename__ = "account"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    """A bearer token. Only its sha256 is kept; `prefix` identifies it to people."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    account: Mapped[Account] = relationship(lazy="raise")


class Attribute(Base):
    __tablename__ = "attribute"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))

    values: Mapped[list[AttributeValue]] = relationship(
        back_populates="attribute", lazy="raise", order_by="AttributeValue.id"
    )


class AttributeValue(Base):
    """A value of an attribute ("Black" of "Color") and its code ("100"), which image
    sync rules match on."""

    __tablename__ = "attribute_value"
    __table_args__ = (UniqueConstraint("attribute_id", "value"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    attribute_id: Mapped[int] = mapped_column(ForeignKey("attribute.id", ondelete="CASCADE"))
    value: Mapped[str] = mapped_column(String(255))
    code: Mapped[str | None] = mapped_column(String(100), default=None)

    attribute: Mapped[Attribute] = relationship(back_populates="values", lazy="raise")


class Product(Base):
    __tablename__ = "product"
    __table_args__ = (UniqueConstraint("account_id", "item_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    item_number: Mapped[str] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255), default=None)
    use_sort_b2c: Mapped[bool] = mapped_column(Boolean, default=False)
    # The seq of the newest image sync applied; an older one arriving later is superseded.
    last_applied_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Moves whenever the product's images or variants may have changed (an applied sync,
    # a catalog change): a run planned at one version re-plans at apply only if it moved.
    images_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    variants: Mapped[list[Variant]] = relationship(
        back_populates="product",
        lazy="raise",
        order_by="Variant.id",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class Variant(Base):
    __tablename__ = "variant"
    # SKUs are unique across the account, not only within a product.
    __table_args__ = (UniqueConstraint("account_id", "sku"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    product_id: Mapped[int] = mapped_column(
        ForeignKey("product.id", ondelete="CASCADE"), index=True
    )
    sku: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    product: Mapped[Product] = relationship(back_populates="variants", lazy="raise")
    attribute_links: Mapped[list[VariantAttribute]] = relationship(
        lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )


class VariantAttribute(Base):
    """A variant's value of one attribute (at most one value per attribute)."""

    __tablename__ = "variant_attribute"
    __table_args__ = (Index("ix_variant_attribute_value", "attribute_value_id"),)

    variant_id: Mapped[int] = mapped_column(
        ForeignKey("variant.id", ondelete="CASCADE"), primary_key=True
    )
    attribute_id: Mapped[int] = mapped_column(
        ForeignKey("attribute.id", ondelete="CASCADE"), primary_key=True
    )
    attribute_value_id: Mapped[int] = mapped_column(
        ForeignKey("attribute_value.id", ondelete="CASCADE")
    )

    attribute: Mapped[Attribute] = relationship(lazy="raise")
    attribute_value: Mapped[AttributeValue] = relationship(lazy="raise")
