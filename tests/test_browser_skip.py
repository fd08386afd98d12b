"""On a machine without chromium the page tests are skipped with the reason and the one
command that installs it; in CI (TEST_REQUIRE_BROWSER) they fail instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import browser


def test_without_chromium_the_skip_names_the_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("TEST_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="sudo apt-get install chromium"):
        browser.require_chromium()
    monkeypatch.setenv("TEST_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="sudo apt-get install chromium"):
        browser.require_chromium()
