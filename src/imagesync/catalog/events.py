"""What the catalog announces to the domains that hang data on its products (image sync:
variant links and image files), so that the catalog never imports them. A domain
registers a listener once per process (`listen`); the catalog calls every listener inside
the transaction that makes the change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.catalog.models import Account


class CatalogListener(Protocol):
    async def products_deleting(self, session: AsyncSession, product_ids: Sequence[int]) -> None:
        """These products are about to be deleted."""

    async def products_changed(self, session: AsyncSession, product_ids: Sequence[int]) -> None:
        """These products were created or updated (their variants may have changed)."""

    async def codes_changed(self, session: AsyncSession, account: Account) -> None:
        """The account's attribute codes changed."""


_listeners: list[CatalogListener] = []


def listen(listener: CatalogListener) -> None:
    """Register `listener`; registering an equal one again does nothing."""
    if listener not in _listeners:
        _listeners.append(listener)


async def products_deleting(session: AsyncSession, product_ids: Sequence[int]) -> None:
    if product_ids:
        for listener in _listeners:
            await listener.products_deleting(session, product_ids)


async def products_changed(session: AsyncSession, product_ids: Sequence[int]) -> None:
    if product_ids:
        for listener in _listeners:
            await listener.products_changed(session, product_ids)


async def codes_changed(session: AsyncSession, account: Account) -> None:
    for listener in _listeners:
        await listener.codes_changed(session, account)
