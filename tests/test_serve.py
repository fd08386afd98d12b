"""`imagesync serve` as a newcomer runs it: a real process on a real port."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.served import clean_env, serve


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with serve(tmp_path, clean_env()) as base:
        yield base, tmp_path


def test_serve_migrates_the_default_sqlite_and_answers(server: tuple[str, Path]) -> None:
    base, cwd = server
    assert (cwd / "data" / "imagesync.db").is_file()
    assert httpx.get(f"{base}/readyz").json() == {"status": "ok", "database": "ok"}
    response = httpx.get(f"{base}/v10/products")
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "unauthorized"


def test_serve_refuses_bad_settings(tmp_path: Path) -> None:
    env = {**clean_env(), "IMAGESYNC_PORT": "not-a-port"}
    result = subprocess.run(
        [sys.executable, "-m", "imagesync", "serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "IMAGESYNC_PORT" in result.stderr
