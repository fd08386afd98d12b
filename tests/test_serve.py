"""`imagesync serve` as a newcomer runs it: a real process on a real port."""

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.served import clean_env, roles, serve, serve_process
from tests.waiting import wait_for


def default_env() -> dict[str, str]:
    """A newcomer's environment: no IMAGESYNC_* setting at all."""
    return {k: v for k, v in clean_env().items() if k != "IMAGESYNC_WEB_WORKERS"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with serve(tmp_path, default_env()) as base:
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


@pytest.mark.parametrize(
    ("args", "api_processes"),
    [((), len(os.sched_getaffinity(0))), (("--workers", "1"), 1)],
    ids=["default", "one"],
)
async def test_serve_runs_the_work_beside_its_api_processes(
    tmp_path: Path, args: tuple[str, ...], api_processes: int
) -> None:
    """By default one API process per core, with `--workers 1` one; either way the work
    runs in a process of its own beside them, and SIGTERM stops them all."""
    with serve_process(tmp_path, default_env(), *args) as (_base, process):

        async def spawned() -> bool:
            found = roles(process.pid)
            return len(found["api"]) == api_processes and len(found["work"]) == 1

        await wait_for(spawned, 30)
        found = roles(process.pid)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    assert not [pid for pid in found["api"] + found["work"] if Path(f"/proc/{pid}").exists()]
