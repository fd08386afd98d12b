"""Catalog use cases: accounts and tokens, attributes, products and variants.

Functions take the session first and only flush; the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.catalog import repository
from imagesync.catalog.models import (
    Account,
    ApiToken,
    Attribute,
    AttributeValue,
    Product,
    Variant,
    VariantAttribute,
)
from imagesync.catalog.schemas import (
    AttributeRead,
    AttributeSyncCounts,
    AttributeSyncRequest,
    AttributeSyncResult,
    AttributeValueRead,
    Change,
    ChangeCounts,
    ProductSyncCounts,
    ProductSyncOutcome,
    ProductSyncRequest,
    ProductSyncResult,
    VariantRead,
    VariantSyncOutcome,
)
from imagesync.kit.db import utcnow
from imagesync.kit.errors import (
    Conflict,
    NotFound,
    Problem,
    Unauthorized,
    ValidationFailed,
    duplicate_problems,
)

log = structlog.get_logger(__name__)

TOKEN_SCHEME = "isk_"
TOKEN_PREFIX_LENGTH = 12  # "isk_" and 8 random characters: enough to tell tokens apart


# -- accounts and tokens ------------------------------------------------------------------


def hash_token(token: str) -> str:
    # Tokens carry 192 random bits, so a fast hash is safe: nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    account: str
    token: str
    prefix: str


async def create_account(session: AsyncSession, name: str) -> IssuedToken:
    if await repository.get_account_by_name(session, name):
        raise Conflict(f"Account {name!r} exists already")
    account = Account(name=name)
    session.add(account)
    await session.flush()
    log.info("catalog.account.created", account=name)
    return await issue_token(session, account)


async def issue_token(session: AsyncSession, account: Account) -> IssuedToken:
    token = TOKEN_SCHEME + secrets.token_urlsafe(24)
    prefix = token[:TOKEN_PREFIX_LENGTH]
    session.add(ApiToken(account_id=account.id, prefix=prefix, token_hash=hash_token(token)))
    await session.flush()
    log.info("catalog.token.issued", account=account.name, prefix=prefix)
    return IssuedToken(account=account.name, token=token, prefix=prefix)


async def get_account(session: AsyncSession, name: str) -> Account:
    account = await repository.get_account_by_name(session, name)
    if account is None:
        raise NotFound(f"No account {name!r}")
    return account


async def list_tokens(session: AsyncSession, account: Account) -> Sequence[ApiToken]:
    return await repository.list_tokens(session, account.id)


async def create_token(session: AsyncSession, account_name: str) -> IssuedToken:
    return await issue_token(session, await get_account(session, account_name))


async def revoke_token(session: AsyncSession, prefix_or_token: str) -> ApiToken:
    """Revoke the one token that the given prefix (at least 8 characters, of any length)
    or whole token names. Only the first 12 characters are kept of a token, so a longer
    prefix is matched by those."""
    if len(prefix_or_token) < len(TOKEN_SCHEME) + 4:
        raise ValidationFailed("Give at least the first 8 characters of the token")
    active = None
    if len(prefix_or_token) > TOKEN_PREFIX_LENGTH:
        active = await repository.get_active_token(session, hash_token(prefix_or_token))
    matches: Sequence[ApiToken] = (
        [active]
        if active
        else await repository.find_tokens_by_prefix(session, prefix_or_token[:TOKEN_PREFIX_LENGTH])
    )
    active_matches = [t for t in matches if t.revoked_at is None]
    if not active_matches:
        raise NotFound(f"No active token starts with {prefix_or_token[:TOKEN_PREFIX_LENGTH]!r}")
    if len(active_matches) > 1:
        raise Conflict(f"{len(active_matches)} tokens start with {prefix_or_token!r}; give more")
    token = active_matches[0]
    token.revoked_at = utcnow()
    await session.flush()
    log.info("catalog.token.revoked", account=token.account.name, prefix=token.prefix)
    return token


async def authenticate(session: AsyncSession, authorization: str | None) -> Account:
    """The account of a `Bearer` token; 401 when missing, unknown or revoked."""
    return (await authenticate_token(session, authorization)).account


async def authenticate_token(session: AsyncSession, authorization: str | None) -> ApiToken:
    """The active token of a `Bearer` header, with its account; 401 otherwise."""
    if not authorization:
        raise Unauthorized("Send an API token: Authorization: Bearer <token>")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Use the Bearer scheme: Authorization: Bearer <token>")
    api_token = await repository.get_active_token(session, hash_token(token))
    if api_token is None:
        raise Unauthorized("The API token is unknown or revoked")
    return api_token


async def account_of_active_token(session: AsyncSession, token_id: int) -> Account | None:
    """The account of token `token_id`, unless it was revoked."""
    return await repository.account_of_active_token(session, token_id)


# -- attributes ---------------------------------------------------------------------------


def attribute_read(attribute: Attribute) -> AttributeRead:
    return AttributeRead(
        name=attribute.name,
        values=[AttributeValueRead(value=v.value, code=v.code) for v in attribute.values],
    )


async def list_attributes(session: AsyncSession, account: Account) -> list[AttributeRead]:
    return [attribute_read(a) for a in await repository.list_attributes(session, account.id)]


async def sync_attributes(
    session: AsyncSession, account: Account, request: AttributeSyncRequest
) -> AttributeSyncResult:
    """Upsert attributes by name and their values by value, setting each value's code."""
    problems = duplicate_problems(
        (a.name, f"/attributes/{i}/name") for i, a in enumerate(request.attributes)
    )
    for i, a in enumerate(request.attributes):
        problems += duplicate_problems(
            (v.value, f"/attributes/{i}/values/{j}/value") for j, v in enumerate(a.values)
        )
    if problems:
        raise ValidationFailed(problems=problems)

    existing = {
        a.name: a
        for a in await repository.list_attributes(
            session, account.id, [a.name for a in request.attributes]
        )
    }
    attr_counts, value_counts = ChangeCounts(), ChangeCounts()
    synced: list[Attribute] = []
    for i, incoming in enumerate(request.attributes):
        attribute = existing.get(incoming.name)
        if attribute is None:
            attribute = Attribute(account_id=account.id, name=incoming.name, values=[])
            session.add(attribute)
            attr_counts.created += 1
        else:
            attr_counts.unchanged += 1
        by_value = {v.value: v for v in attribute.values}
        for value_in in incoming.values:
            value = by_value.get(value_in.value)
            if value is None:
                attribute.values.append(AttributeValue(value=value_in.value, code=value_in.code))
                value_counts.created += 1
            elif value.code != value_in.code:
                value.code = value_in.code
                value_counts.updated += 1
            else:
                value_counts.unchanged += 1
        problems += _code_clashes(attribute, i, [v.value for v in incoming.values])
        synced.append(attribute)
    if problems:
        raise ValidationFailed(problems=problems)
    await session.flush()
    log.info(
        "catalog.attributes.synced",
        account=account.name,
        attributes=attr_counts.model_dump(),
        values=value_counts.model_dump(),
    )
    return AttributeSyncResult(
        attributes=[attribute_read(a) for a in synced],
        counts=AttributeSyncCounts(attributes=attr_counts, values=value_counts),
    )


def _code_clashes(attribute: Attribute, index: int, sent: list[str]) -> list[Problem]:
    # Two values of one attribute with one code would make image rules ambiguous.
    holders: dict[str, list[str]] = {}
    for value in attribute.values:
        if value.code is not None:
            holders.setdefault(value.code, []).append(value.value)
    problems = []
    for code, values in holders.items():
        if len(values) > 1:
            j = next((sent.index(v) for v in values if v in sent), 0)
            problems.append(
                Problem(
                    detail=f"Code {code!r} of {attribute.name!r} would belong to "
                    f"{', '.join(repr(v) for v in values)}; codes must be unique per attribute",
                    pointer=f"/attributes/{index}/values/{j}/code",
                    code="duplicate_code",
                    title="Duplicate code",
                )
            )
    return problems


# -- products -----------------------------------------------------------------------------


def variant_read(variant: Variant) -> VariantRead:
    links = sorted(variant.attribute_links, key=lambda link: link.attribute_value.attribute.name)
    return VariantRead(
        sku=variant.sku,
        attributes={
            link.attribute_value.attribute.name: AttributeValueRead(
                value=link.attribute_value.value, code=link.attribute_value.code
            )
            for link in links
        },
        created_at=variant.created_at,
        updated_at=variant.updated_at,
    )


async def get_product(session: AsyncSession, account: Account, item_number: str) -> Product:
    product = await repository.get_product(session, account.id, item_number)
    if product is None:
        raise NotFound(f"No product with item number {item_number!r}")
    return product


async def list_products(
    session: AsyncSession, account: Account, *, offset: int, limit: int
) -> tuple[Sequence[Product], int]:
    return await repository.list_products(session, account.id, offset=offset, limit=limit)


async def product_ids(
    session: AsyncSession, account: Account, item_numbers: Sequence[str]
) -> list[int]:
    return await repository.get_product_ids(session, account.id, item_numbers)


class _AttributeResolver:
    """Finds or creates attribute values by (name, value) for one request."""

    def __init__(self, session: AsyncSession, account: Account, attributes: Sequence[Attribute]):
        self._session = session
        self._account = account
        self._attributes = {a.name: a for a in attributes}

    def resolve(self, name: str, value: str) -> tuple[Attribute, AttributeValue]:
        attribute = self._attributes.get(name)
        if attribute is None:
            attribute = Attribute(account_id=self._account.id, name=name, values=[])
            self._session.add(attribute)
            self._attributes[name] = attribute
        for existing in attribute.values:
            if existing.value == value:
                return attribute, existing
        # A value not defined yet is created without a code; /attributes/sync sets codes.
        created = AttributeValue(value=value)
        attribute.values.append(created)
        return attribute, created


def _attribute_map(variant: Variant) -> dict[str, str]:
    return {
        link.attribute_value.attribute.name: link.attribute_value.value
        for link in variant.attribute_links
    }


async def sync_products(
    session: AsyncSession, account: Account, request: ProductSyncRequest
) -> ProductSyncResult:
    """Upsert products by item number and variants by SKU; `delete: true` deletes.

    All or nothing: any problem fails the whole request and the caller rolls back.
    """
    products_in = request.products
    problems = duplicate_problems(
        (p.item_number, f"/products/{i}/item_number") for i, p in enumerate(products_in)
    )
    problems += duplicate_problems(
        (v.sku, f"/products/{i}/variants/{j}/sku")
        for i, p in enumerate(products_in)
        for j, v in enumerate(p.variants or [])
    )
    for i, p in enumerate(products_in):
        if p.delete and p.variants:
            problems.append(
                Problem(
                    detail="A product marked for deletion takes no variants",
                    pointer=f"/products/{i}/variants",
                )
            )
    if problems:
        raise ValidationFailed(problems=problems)

    products = {
        p.item_number: p
        for p in await repository.get_products(
            session, account.id, [p.item_number for p in products_in]
        )
    }
    all_skus = [v.sku for p in products_in for v in p.variants or []]
    owners = {
        v.sku: v.product.item_number
        for v in await repository.get_variants_by_sku(session, account.id, all_skus)
    }
    attribute_names = {n for p in products_in for v in p.variants or [] for n in v.attributes or {}}
    resolver = _AttributeResolver(
        session, account, await repository.list_attributes(session, account.id, attribute_names)
    )

    outcomes: list[ProductSyncOutcome] = []
    product_counts, variant_counts = ChangeCounts(), ChangeCounts()
    now = utcnow()
    for i, product_in in enumerate(products_in):
        product = products.get(product_in.item_number)
        variant_outcomes: list[VariantSyncOutcome] = []
        result: Change
        if product_in.delete:
            if product is None:
                result = "not_found"
            else:
                await session.delete(product)
                result = "deleted"
        else:
            changed = False
            if product is None:
                product = Product(
                    account_id=account.id,
                    item_number=product_in.item_number,
                    name=product_in.name,
                    variants=[],
                )
                session.add(product)
                result = "created"
            else:
                result = "unchanged"
                if "name" in product_in.model_fields_set and product.name != product_in.name:
                    product.name = product_in.name
                    changed = True
            by_sku = {v.sku: v for v in product.variants}
            for j, variant_in in enumerate(product_in.variants or []):
                owner = owners.get(variant_in.sku)
                if owner is not None and owner != product.item_number:
                    problems.append(
                        Problem(
                            detail=f"SKU {variant_in.sku!r} belongs to product {owner!r}; "
                            "SKUs cannot move between products",
                            pointer=f"/products/{i}/variants/{j}/sku",
                            code="sku_taken",
                            title="SKU belongs to another product",
                        )
                    )
                    continue
                variant = by_sku.get(variant_in.sku)
                vresult: Change
                if variant_in.delete:
                    if variant is None:
                        vresult = "not_found"
                    else:
                        product.variants.remove(variant)
                        vresult = "deleted"
                elif variant is None:
                    variant = Variant(account_id=account.id, sku=variant_in.sku, attribute_links=[])
                    _set_attributes(variant, variant_in.attributes or {}, resolver)
                    product.variants.append(variant)
                    vresult = "created"
                elif (
                    variant_in.attributes is not None
                    and _attribute_map(variant) != variant_in.attributes
                ):
                    _set_attributes(variant, variant_in.attributes, resolver)
                    variant.updated_at = now
                    vresult = "updated"
                else:
                    vresult = "unchanged"
                changed = changed or vresult in ("created", "updated", "deleted")
                setattr(variant_counts, vresult, getattr(variant_counts, vresult) + 1)
                variant_outcomes.append(VariantSyncOutcome(sku=variant_in.sku, result=vresult))
            if result == "unchanged" and changed:
                product.updated_at = now
                result = "updated"
        setattr(product_counts, result, getattr(product_counts, result) + 1)
        outcomes.append(
            ProductSyncOutcome(
                item_number=product_in.item_number, result=result, variants=variant_outcomes
            )
        )
    if problems:
        raise ValidationFailed(problems=problems)
    await session.flush()
    log.info(
        "catalog.products.synced",
        account=account.name,
        products=product_counts.model_dump(),
        variants=variant_counts.model_dump(),
    )
    return ProductSyncResult(
        products=outcomes,
        counts=ProductSyncCounts(products=product_counts, variants=variant_counts),
    )


def _set_attributes(
    variant: Variant, attributes: dict[str, str], resolver: _AttributeResolver
) -> None:
    """Make the variant's attribute values exactly `attributes`, editing links in place
    (a link is keyed by variant and attribute, so it is updated rather than replaced)."""
    links = {link.attribute_value.attribute.name: link for link in variant.attribute_links}
    for name, stale in links.items():
        if name not in attributes:
            variant.attribute_links.remove(stale)
    for name, value in attributes.items():
        attribute, attribute_value = resolver.resolve(name, value)
        current = links.get(name)
        if current is None:
            variant.attribute_links.append(
                VariantAttribute(attribute=attribute, attribute_value=attribute_value)
            )
        elif current.attribute_value is not attribute_value:
            current.attribute_value = attribute_value
