"""Debian's chromium for the page tests, driven by Playwright (never a downloaded browser),
seeing nothing but the service."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "sudo apt-get install chromium (or run .ci/run, which installs it)"
# As this machine's closed network needs: no background requests, no sandbox as root.
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> Path:
    """The browser, or a skip (a failure when TEST_REQUIRE_BROWSER is set, as in CI)."""
    if not CHROMIUM.exists():
        if os.environ.get("TEST_REQUIRE_BROWSER"):
            pytest.fail(f"TEST_REQUIRE_BROWSER is set but {CHROMIUM} is missing: {INSTALL}")
        pytest.skip(f"the page tests need Debian's chromium at {CHROMIUM}: {INSTALL}")
    return CHROMIUM


def only_the_service(page: Any, base: str) -> list[str]:
    """Abort every request of `page` that is not to `base`; the list of those aborted."""
    elsewhere: list[str] = []

    def route(request_route: Any) -> None:
        if request_route.request.url.startswith(base):
            request_route.continue_()
        else:
            elsewhere.append(request_route.request.url)
            request_route.abort()

    page.route("**/*", route)
    return elsewhere
