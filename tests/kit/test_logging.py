"""A crash is logged as one short plain traceback, without colour codes off a terminal."""

from __future__ import annotations

import pytest
import structlog

from imagesync.kit.logging import configure_logging


def crash(depth: int) -> None:
    big_local = list(range(10_000))  # would be printed, frame after frame, with locals
    if depth:
        crash(depth - 1)
    raise ValueError(f"boom after {len(big_local)}")


def test_an_exception_is_one_plain_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "console")
    log = structlog.get_logger("test")
    try:
        crash(20)
    except ValueError:
        log.exception("sync.crashed", product="cool-product-001")
    err = capsys.readouterr().err
    assert "sync.crashed" in err
    assert "ValueError: boom after 10000" in err
    assert err.count("Traceback (most recent call last)") == 1
    assert "\x1b[" not in err  # stderr is not a terminal here: no colour codes
    assert "[0, 1, 2" not in err  # no local variables (big_local's value)
    assert "│" not in err  # no frames drawn in boxes
    assert len(err.splitlines()) < 100  # 22 frames of two lines each, and the message
