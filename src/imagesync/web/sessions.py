"""Signing in to the admin pages with an API token: a session row, a cookie holding its
random token (HttpOnly, SameSite=Strict, expiring), and a CSRF token for its forms."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from imagesync.catalog import service as catalog_service
from imagesync.catalog.models import Account
from imagesync.kit.db import utcnow
from imagesync.web.models import AdminSession

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
    account = await catalog_service.authenticate(session, f"Bearer {api_token.strip()}")
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        AdminSession(
            id=_digest(token),
            account_id=account.id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + LIFETIME,
        )
    )
    # Expired sessions go as new ones come.
    await session.execute(delete(AdminSession).where(AdminSession.expires_at < now))
    return token, account


async def signed_in(session: AsyncSession, request: Request) -> SignedIn | None:
    """The account of the request's session cookie, if it names a live session."""
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
    account = await session.get(Account, row.account_id)
    return None if account is None else SignedIn(account, row.csrf_token)


async def sign_out(session: AsyncSession, request: Request) -> None:
    token = request.cookies.get(COOKIE)
    if token:
        await session.execute(delete(AdminSession).where(AdminSession.id == _digest(token)))


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
