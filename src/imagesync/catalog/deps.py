"""The account a request acts for, from its bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from imagesync.catalog import service
from imagesync.catalog.models import Account
from imagesync.deps import SessionDep


async def _account(
    session: SessionDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Account:
    account = await service.authenticate(session, authorization)
    # Hand the connection back before the route runs: a request never holds two, and a
    # route that opens its own transactions holds none while it waits.
    await session.commit()
    return account


AccountDep = Annotated[Account, Depends(_account)]
