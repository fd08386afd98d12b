"""Accounts and their API tokens: issuing, revoking, authenticating (only a token's hash
is kept). Functions take the session first and only flush; the caller owns the
transaction."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import make_transient_to_detached

from imagesync.catalog import repository
from imagesync.catalog.models import (
    Account,
    ApiToken,
)
from imagesync.kit.db import session_scope, utcnow
from imagesync.kit.errors import (
    Conflict,
    NotFound,
    Unauthorized,
    ValidationFailed,
)

log = structlog.get_logger(__name__)

TOKEN_SCHEME = "isk_"
TOKEN_PREFIX_LENGTH = 12  # "isk_" and 8 random characters: enough to tell tokens apart


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


class TokenCache:
    """The accounts of active tokens seen lately, by the token's hash, each for
    `seconds` after it was read: a token revoked by another process (`imagesync tokens
    revoke`) stops working within that time. Unknown and revoked tokens are never kept,
    so a token just issued works at once. At most `size` tokens; the oldest go first."""

    def __init__(self, seconds: float, size: int = 10_000) -> None:
        self.seconds = seconds
        self.size = size
        self._found: dict[str, tuple[float, Account]] = {}

    def get(self, token_hash: str) -> Account | None:
        found = self._found.get(token_hash)
        if found is None:
            return None
        read_at, account = found
        if time.monotonic() - read_at >= self.seconds:
            del self._found[token_hash]
            return None
        return account

    def put(self, token_hash: str, account: Account) -> None:
        """Keep a copy of `account` that belongs to no session: the request's session
        may roll back (which expires what it loaded) while others use the copy."""
        if self.seconds <= 0:
            return
        if len(self._found) >= self.size:
            del self._found[next(iter(self._found))]
        copy = Account(id=account.id, name=account.name, created_at=account.created_at)
        make_transient_to_detached(copy)
        self._found[token_hash] = (time.monotonic(), copy)


def bearer_hash(authorization: str | None) -> str:
    """The hash of a `Bearer` header's token; 401 when it is missing or not one."""
    if not authorization:
        raise Unauthorized("Send an API token: Authorization: Bearer <token>")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Use the Bearer scheme: Authorization: Bearer <token>")
    return hash_token(token)


async def authenticate(
    reads: async_sessionmaker[AsyncSession], authorization: str | None, cache: TokenCache
) -> Account:
    """The account of a `Bearer` token, from `cache` when it was read lately (no session
    then: a cached token costs a request no connection), else read in a short
    transaction of its own, ended before the caller goes on; 401 when missing, unknown
    or revoked."""
    token_hash = bearer_hash(authorization)
    if (account := cache.get(token_hash)) is not None:
        return account
    async with session_scope(reads) as session:
        api_token = await _active_token(session, token_hash)
        cache.put(token_hash, api_token.account)
    return api_token.account


async def authenticate_token(session: AsyncSession, authorization: str | None) -> ApiToken:
    """The active token of a `Bearer` header, with its account, read now; 401 otherwise."""
    return await _active_token(session, bearer_hash(authorization))


async def _active_token(session: AsyncSession, token_hash: str) -> ApiToken:
    api_token = await repository.get_active_token(session, token_hash)
    if api_token is None:
        raise Unauthorized("The API token is unknown or revoked")
    return api_token


async def account_of_active_token(session: AsyncSession, token_id: int) -> Account | None:
    """The account of token `token_id`, unless it was revoked."""
    return await repository.account_of_active_token(session, token_id)
