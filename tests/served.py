"""`imagesync serve` as a real process on a real port of 127.0.0.1, for the tests that need
one (a browser, a fuzzer, a second process)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env() -> dict[str, str]:
    """This environment without any IMAGESYNC_* setting of the developer's, and with one
    API process for each `serve`: the tests start many, on a machine of two cores (the
    default, one per core, is tested in tests/test_serve.py)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("IMAGESYNC_")} | {
        "IMAGESYNC_WEB_WORKERS": "1"
    }


def create_token(cwd: Path, env: dict[str, str], account: str = "acme") -> str:
    """A new account's first token, as `imagesync accounts create` prints it."""
    created = subprocess.run(
        [sys.executable, "-m", "imagesync", "accounts", "create", account, "--json"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    token: str = json.loads(created.stdout)["token"]
    return token


@contextmanager
def serve(cwd: Path, env: dict[str, str], *args: str) -> Iterator[str]:
    """Run `imagesync serve` until the block ends; yields its base URL once it answers."""
    with serve_process(cwd, env, *args) as (base, _process):
        yield base


@contextmanager
def serve_process(
    cwd: Path, env: dict[str, str], *args: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`serve`, yielding its process too."""
    port = free_port()
    log = cwd / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "imagesync", "serve", "--port", str(port), *args],
            cwd=cwd,
            env=env,
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
        yield base, process
    finally:
        process.terminate()
        process.wait(timeout=20)


def migrated(cwd: Path, env: dict[str, str], fetch_from: str) -> dict[str, str]:
    """`env` (its database) migrated, with files under `cwd`, fetching allowed from
    `fetch_from` (a `host:port`), no renditions and quiet logs: a served process's
    settings."""
    served = {
        **clean_env(),
        **env,
        "IMAGESYNC_STORAGE_URL": str(cwd / "files"),
        "IMAGESYNC_FETCH_ALLOW": fetch_from,
        "IMAGESYNC_RENDITION_WIDTHS": "",
        "IMAGESYNC_LOG_LEVEL": "warning",
    }
    subprocess.run([sys.executable, "-m", "imagesync", "migrate"], cwd=cwd, env=served, check=True)
    return served


async def push(
    cwd: Path, env: dict[str, str], base: str, token: str, *args: str
) -> tuple[int | None, str]:
    """`imagesync push ARGS` against `base`: its exit code and its output, its
    whitespace collapsed (a table's cells then read as one line). Not blocking: an
    image server of the test answers on this event loop meanwhile."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "imagesync",
        "push",
        *args,
        cwd=cwd,
        env={**env, "IMAGESYNC_URL": base, "IMAGESYNC_TOKEN": token},
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode, " ".join(stdout.decode().split())


def children(pid: int) -> dict[int, str]:
    """The processes `pid` started, by pid: their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parent = next(line for line in status.splitlines() if line.startswith("PPid:"))
        if int(parent.split()[1]) == pid:
            found[int(entry.name)] = command
    return found


def roles(pid: int) -> dict[str, list[int]]:
    """`serve`'s children by what they are: API processes and the work process."""
    found: dict[str, list[int]] = {"api": [], "work": []}
    for child, command in children(pid).items():
        if "multiprocessing.spawn" in command:
            found["api"].append(child)
        elif "imagesync.serving" in command:
            found["work"].append(child)
    return found
