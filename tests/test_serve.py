"""`imagesync serve` as a newcomer runs it: a real process on a real port."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("IMAGESYNC_")}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "imagesync", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=clean_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
            assert process.poll() is None, log.read_text()
        else:
            pytest.fail("server did not come up within 30 s")
        yield base, tmp_path
    finally:
        process.terminate()
        process.wait(timeout=10)


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
