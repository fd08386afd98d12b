"""A real `imagesync serve` hardened as docs/deployment.md ("Hardening") says: behind a
TLS proxy it trusts X-Forwarded-* from the addresses allowed only, a token sent where it
should not be never reaches the access log, and its SQLite file is its user's alone."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest

from tests.served import clean_env, serve

pytestmark = pytest.mark.slow

HTTPS = {"X-Forwarded-Proto": "https"}


def cookie_of(response: httpx.Response) -> str:
    cookie: str = response.headers.get("set-cookie", "")
    assert cookie, response.headers
    return cookie


def test_behind_an_allowed_proxy_the_cookie_is_secure(tmp_path: Path) -> None:
    env = {**clean_env(), "IMAGESYNC_FORWARDED_ALLOW_IPS": "127.0.0.1"}
    with serve(tmp_path, env) as base:
        plain = httpx.get(f"{base}/admin/sign-in")
        proxied = httpx.get(f"{base}/admin/sign-in", headers=HTTPS)
    assert "secure" not in cookie_of(plain).lower()
    assert "secure" in cookie_of(proxied).lower()
    assert 'action="/admin/sign-in"' in proxied.text


def test_forwarded_headers_are_ignored_unless_allowed(tmp_path: Path) -> None:
    with serve(tmp_path, clean_env()) as base:
        proxied = httpx.get(f"{base}/admin/sign-in", headers=HTTPS)
    assert "secure" not in cookie_of(proxied).lower()  # anyone could have sent it


def test_a_token_in_a_query_string_never_reaches_the_log(tmp_path: Path) -> None:
    secret = "isk_DoNotLogMe0123456789abcdefghij"
    with serve(tmp_path, clean_env()) as base:
        refused = httpx.get(f"{base}/products", params={"token": secret, "page": "0"})
        assert refused.status_code in (401, 422)
        httpx.get(f"{base}/healthz?api_key=also-secret")
    log = (tmp_path / "serve.log").read_text()
    assert "GET /products?token=[redacted]&page=0" in log  # the request is still logged
    assert secret not in log
    assert "also-secret" not in log


def test_the_sqlite_file_is_readable_by_its_user_alone(tmp_path: Path) -> None:
    with serve(tmp_path, clean_env()):
        database = tmp_path / "data" / "imagesync.db"
        assert stat.S_IMODE(database.stat().st_mode) == 0o600
