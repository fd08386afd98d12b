"""Attributes and their values with codes: the codes image rules match on. Functions take
the session first and only flush; the caller owns the transaction."""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.catalog import repository
from imagesync.catalog.models import (
    Account,
    Attribute,
    AttributeValue,
)
from imagesync.catalog.schemas import (
    AttributeRead,
    AttributeSyncCounts,
    AttributeSyncRequest,
    AttributeSyncResult,
    AttributeValueRead,
    ChangeCounts,
)
from imagesync.kit.errors import (
    Problem,
    ValidationFailed,
    duplicate_problems,
)

log = structlog.get_logger(__name__)


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
