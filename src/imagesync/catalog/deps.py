"""The account a request acts for, from its bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from imagesync.catalog import auth as catalog_auth
from imagesync.catalog.models import Account
from imagesync.kit.db import session_scope

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
    cache: catalog_auth.TokenCache = request.app.state.token_cache
    token_hash = catalog_auth.bearer_hash(authorization)
    if (account := cache.get(token_hash)) is not None:
        return account  # no session: a cached token costs the request no connection
    # Its own short read, ended before the route runs: a request never holds two
    # connections, and a route that opens its own transactions holds none while it waits.
    async with session_scope(request.app.state.read_sessionmaker) as session:
        return await catalog_auth.authenticate(session, authorization, cache)


AccountDep = Annotated[Account, Depends(_account)]
