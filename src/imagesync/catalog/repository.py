"""All SQL of the catalog. Every query on account data is scoped by `account_id`."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from itertools import islice

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload
from sqlalchemy.orm.interfaces import LoaderOption

from imagesync.catalog.models import (
    Account,
    ApiToken,
    Attribute,
    AttributeValue,
    Product,
    Variant,
    VariantAttribute,
)

# Keeps each IN list far below SQLite's limit on bound parameters.
_IN_CHUNK = 500


def _chunks(values: Collection[str]) -> Iterator[list[str]]:
    iterator = iter(values)
    while chunk := list(islice(iterator, _IN_CHUNK)):
        yield chunk


# -- accounts and tokens ------------------------------------------------------------------


async def get_account_by_name(session: AsyncSession, name: str) -> Account | None:
    return await session.scalar(select(Account).where(Account.name == name))


async def list_accounts(session: AsyncSession) -> Sequence[Account]:
    return (await session.scalars(select(Account).order_by(Account.name))).all()


async def get_active_token(session: AsyncSession, token_hash: str) -> ApiToken | None:
    stmt = (
        select(ApiToken)
        .where(ApiToken.token_hash == token_hash, ApiToken.revoked_at.is_(None))
        .options(joinedload(ApiToken.account, innerjoin=True))
    )
    return await session.scalar(stmt)


async def account_of_active_token(session: AsyncSession, token_id: int) -> Account | None:
    stmt = (
        select(Account)
        .join(ApiToken, ApiToken.account_id == Account.id)
        .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
    )
    return await session.scalar(stmt)


async def find_tokens_by_prefix(session: AsyncSession, prefix: str) -> Sequence[ApiToken]:
    # The stored prefix is a fixed-length head of the token; a shorter one given by a
    # person matches every token starting with it.
    stmt = select(ApiToken).where(ApiToken.prefix.startswith(prefix, autoescape=True))
    return (await session.scalars(stmt.options(selectinload(ApiToken.account)))).all()


async def list_tokens(session: AsyncSession, account_id: int) -> Sequence[ApiToken]:
    stmt = select(ApiToken).where(ApiToken.account_id == account_id).order_by(ApiToken.id)
    return (await session.scalars(stmt)).all()


# -- attributes ---------------------------------------------------------------------------


async def list_attributes(
    session: AsyncSession, account_id: int, names: Collection[str] | None = None
) -> Sequence[Attribute]:
    stmt = (
        select(Attribute)
        .where(Attribute.account_id == account_id)
        .options(selectinload(Attribute.values))
        .order_by(Attribute.name)
    )
    if names is not None:
        stmt = stmt.where(Attribute.name.in_(names))
    return (await session.scalars(stmt)).all()


# -- products and variants ----------------------------------------------------------------


def _full_product() -> list[LoaderOption]:
    return [
        selectinload(Product.variants)
        .selectinload(Variant.attribute_links)
        .selectinload(VariantAttribute.attribute_value)
        .selectinload(AttributeValue.attribute)
    ]


async def get_products(
    session: AsyncSession, account_id: int, item_numbers: Collection[str]
) -> Sequence[Product]:
    found: list[Product] = []
    for chunk in _chunks(item_numbers):
        stmt = (
            select(Product)
            .where(Product.account_id == account_id, Product.item_number.in_(chunk))
            .options(*_full_product())
        )
        found.extend((await session.scalars(stmt)).all())
    return found


async def get_product_ids(
    session: AsyncSession, account_id: int, item_numbers: Collection[str]
) -> list[int]:
    ids: list[int] = []
    for chunk in _chunks(item_numbers):
        stmt = select(Product.id).where(
            Product.account_id == account_id, Product.item_number.in_(chunk)
        )
        ids.extend((await session.scalars(stmt)).all())
    return ids


async def get_product(session: AsyncSession, account_id: int, item_number: str) -> Product | None:
    products = await get_products(session, account_id, [item_number])
    return products[0] if products else None


async def list_products(
    session: AsyncSession, account_id: int, *, offset: int, limit: int
) -> tuple[Sequence[Product], int]:
    total = await session.scalar(
        select(func.count()).select_from(Product).where(Product.account_id == account_id)
    )
    stmt = (
        select(Product)
        .where(Product.account_id == account_id)
        .order_by(Product.item_number)
        .offset(offset)
        .limit(limit)
        .options(*_full_product())
    )
    return (await session.scalars(stmt)).all(), int(total or 0)


async def get_variants_by_sku(
    session: AsyncSession, account_id: int, skus: Collection[str]
) -> Sequence[Variant]:
    found: list[Variant] = []
    for chunk in _chunks(skus):
        stmt = (
            select(Variant)
            .where(Variant.account_id == account_id, Variant.sku.in_(chunk))
            .options(selectinload(Variant.product))
        )
        found.extend((await session.scalars(stmt)).all())
    return found
