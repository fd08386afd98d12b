"""Signing in to the admin pages with an API token: a session row, a cookie holding its
random token (HttpOnly, SameSite=Strict, expiring), and a CSRF token for its forms."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from imagesync.catalog import auth as catalog_auth
from imagesync.kit.db import utcnow
from imagesync.web.models import AdminSession

if TYPE_CHECKING:
    from imagesync.catalog.models import Account

COOKIE = "imagesync_admin"
SIGN_IN_COOKIE = "imagesync_sign_in"  # the sign-in form's CSRF token, before a session
LIFETIME = timedelta(hours=12)
PATH = "/admin"


@dataclass(frozen=True)
class SignedIn:
    account: Account
    csrf_token: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def sign_in(session: AsyncSession, api_token: str) -> tuple[str, Account]:
    """A new session for the account of `api_token`: the cookie's token and the account.
    Raises `Unauthorized` for a token that is unknown or revoked."""
    opened_with = await catalog_auth.authenticate_token(session, f"Bearer {api_token.strip()}")
    account = opened_with.account
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        AdminSession(
            id=_digest(token),
            account_id=account.id,
            api_token_id=opened_with.id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + LIFETIME,
        )
    )
    # Expired sessions go as new ones come.
    await session.execute(delete(AdminSession).where(AdminSession.expires_at < now))
    return token, account


async def signed_in(session: AsyncSession, request: Request) -> SignedIn | None:
    """The account of the request's session cookie, if it names a live session whose
    token is still active: revoking the token ends its sessions at once."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    row = await session.scalar(
        select(AdminSession).where(
            AdminSession.id == _digest(token), AdminSession.expires_at > utcnow()
        )
    )
    if row is None:
        return None
    account = await catalog_auth.account_of_active_token(session, row.api_token_id)
    return None if account is None else SignedIn(account, row.csrf_token)


async def sign_out(session: AsyncSession, request: Request) -> None:
    token = request.cookies.get(COOKIE)
    if token:
        await session.execute(delete(AdminSession).where(AdminSession.id == _digest(token)))


@dataclass(frozen=True)
class SessionInfo:
    created_at: datetime
    expires_at: datetime
    token_prefix: str


async def list_sessions(session: AsyncSession, account_name: str) -> list[SessionInfo]:
    """The account's live sessions, newest first."""
    account = await catalog_auth.get_account(session, account_name)
    tokens = {t.id: t.prefix for t in await catalog_auth.list_tokens(session, account)}
    rows = await session.scalars(
        select(AdminSession)
        .where(AdminSession.account_id == account.id, AdminSession.expires_at > utcnow())
        .order_by(AdminSession.created_at.desc())
    )
    return [SessionInfo(r.created_at, r.expires_at, tokens.get(r.api_token_id, "")) for r in rows]


async def revoke_sessions(session: AsyncSession, account_name: str) -> int:
    """End every session of the account; how many there were."""
    account = await catalog_auth.get_account(session, account_name)
    result: CursorResult[tuple[()]] = await session.execute(  # type: ignore[assignment]
        delete(AdminSession).where(AdminSession.account_id == account.id)
    )
    return result.rowcount


def same_token(sent: str | None, expected: str | None) -> bool:
    """A form's CSRF token matches, compared in constant time."""
    return bool(sent and expected) and hmac.compare_digest(str(sent), str(expected))


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
