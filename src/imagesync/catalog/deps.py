"""The account a request acts for, from its bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from imagesync.catalog import auth as catalog_auth
from imagesync.catalog.models import Account

# Declares the scheme in the OpenAPI document (so the interactive docs can send a token);
# the header itself is judged below, with a message for each way it can be wrong.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token, as `imagesync accounts create` or `tokens create` print it.",
)


async def _account(
    request: Request,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Account:
    # A request never holds two connections, and a route that opens its own
    # transactions holds none while it waits: the token's read (when it is not cached)
    # ends before the route runs.
    return await catalog_auth.authenticate(
        request.app.state.read_sessionmaker, authorization, request.app.state.token_cache
    )


AccountDep = Annotated[Account, Depends(_account)]
