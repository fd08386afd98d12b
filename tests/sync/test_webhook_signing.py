"""Webhook signatures as Standard Webhooks defines them: the specification's own example,
and that a signature holds exactly for the call it was made for."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagesync.client import InvalidSignature, verify_webhook
from imagesync.sync.webhooks.signing import headers, new_secret, signature, verify

NOW = 1_700_000_000


def test_the_specifications_example() -> None:
    """The example of the Standard Webhooks specification (and of its libraries)."""
    assert (
        signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b'{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_a_secret_is_whsec_and_24_random_bytes() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_")
    assert len(first) == len("whsec_") + 32
    assert first != second


@given(body=st.binary(max_size=2000), message_id=st.text(min_size=1, max_size=40))
def test_a_call_verifies_with_its_secret_only(body: bytes, message_id: str) -> None:
    secret = new_secret()
    sent = headers(secret, message_id, body, now=NOW)
    verify(secret, sent, body, now=NOW + 10)
    # Header names are read in any case, as HTTP servers hand them over.
    verify(secret, {k.upper(): v for k, v in sent.items()}, body, now=NOW)
    with pytest.raises(InvalidSignature):
        verify(new_secret(), sent, body, now=NOW)
    with pytest.raises(InvalidSignature):
        verify(secret, sent, body + b" ", now=NOW)
    with pytest.raises(InvalidSignature):
        verify(secret, {**sent, "webhook-id": message_id + "x"}, body, now=NOW)
    with pytest.raises(InvalidSignature):
        verify(secret, {**sent, "webhook-timestamp": str(NOW + 1)}, body, now=NOW)


def test_an_old_or_future_call_is_refused() -> None:
    secret = new_secret()
    sent = headers(secret, "msg_1", b"{}", now=NOW)
    verify(secret, sent, b"{}", now=NOW + 299)
    for now in (NOW + 301, NOW - 301):
        with pytest.raises(InvalidSignature, match="too far"):
            verify(secret, sent, b"{}", now=now)


def test_any_listed_signature_may_match() -> None:
    """While a secret is rotated, a call lists one signature per secret."""
    old, new = new_secret(), new_secret()
    sent = headers(new, "msg_1", b"{}", now=NOW)
    both = f"{signature(old, 'msg_1', NOW, b'{}')} {sent['webhook-signature']}"
    verify(new, {**sent, "webhook-signature": both}, b"{}", now=NOW)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_headers_are_refused(missing: str) -> None:
    secret = new_secret()
    sent = headers(secret, "msg_1", b"{}")
    del sent[missing]
    with pytest.raises(InvalidSignature, match="missing"):
        verify_webhook(secret, sent, b"{}")


def test_an_error_answer_is_kept_as_its_text() -> None:
    """An endpoint's HTML error page, as the deliveries show it: its words, not its tags."""
    from imagesync.sync.webhooks.deliver import _answer_error

    page = "<!DOCTYPE html><html><body><h1>Error</h1><p>Unsupported method</p></body></html>"
    assert _answer_error(501, page) == "answered 501: Error Unsupported method"
    assert _answer_error(500, "") == "answered 500"
    assert len(_answer_error(500, "x " * 500)) == len("answered 500: ") + 200
