"""Signing webhook calls as the Standard Webhooks specification says, and checking them
(`imagesync.client.verify_webhook`): each call carries `webhook-id`, `webhook-timestamp`
(Unix seconds) and `webhook-signature`, `v1,` and the base64 HMAC-SHA256 of
`{id}.{timestamp}.{body}` keyed by the base64-decoded part of the `whsec_` secret.
Pure: standard library only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

PREFIX = "whsec_"
# A call whose timestamp is further than this from the receiver's clock is refused, so
# that a captured call cannot be replayed later.
TOLERANCE_SECONDS = 5 * 60


class InvalidSignature(ValueError):
    """A webhook call that was not signed with the secret, or is too old or too new."""


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except ValueError as exc:
        raise ValueError("a webhook secret is `whsec_` and base64") from exc


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header of a call."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(
    secret: str, message_id: str, body: bytes, *, now: float | None = None
) -> dict[str, str]:
    """The headers that sign one call of `body`."""
    timestamp = int(time.time() if now is None else now)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> None:
    """Raise `InvalidSignature` unless `body` with these headers (any case) was signed
    with `secret` within `TOLERANCE_SECONDS` of now. Any one of the signatures the
    header lists (space-separated, while a secret is being rotated) may match."""
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        message_id = lowered["webhook-id"]
        timestamp = int(lowered["webhook-timestamp"])
        listed = lowered["webhook-signature"].split()
    except (KeyError, ValueError) as exc:
        raise InvalidSignature("the webhook headers are missing or malformed") from exc
    if abs((time.time() if now is None else now) - timestamp) > TOLERANCE_SECONDS:
        raise InvalidSignature("the webhook timestamp is too far from now")
    expected = signature(secret, message_id, timestamp, body)
    if not any(hmac.compare_digest(expected, sent) for sent in listed):
        raise InvalidSignature("no webhook signature matches")
