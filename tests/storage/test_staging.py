"""Staging: downloads wait apart from the store, in private folders; what a gone
process left is cleaned up, and bytes the store refused are kept for the next try."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

from imagesync.storage.staging import KEEP_SECONDS, Staging


def test_each_process_stages_in_a_private_folder(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    assert staging.in_flight == (tmp_path / "staging" / f"{socket.gethostname()}-{os.getpid()}")
    for folder in (staging.parent, staging.in_flight, staging.kept_dir):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_restart_removes_what_killed_processes_left_mid_download(tmp_path: Path) -> None:
    parent = tmp_path / "staging"
    host = socket.gethostname()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = parent / f"{host}-{gone.pid}"
    live = parent / f"{host}-{os.getppid()}"  # a process still running: left alone
    elsewhere = parent / f"other-host-{gone.pid}"  # another machine's: cannot be judged
    for folder in (dead, live, elsewhere):
        folder.mkdir(parents=True)
        (folder / "dl-abc").write_bytes(b"partial")

    Staging(parent)
    assert not dead.exists()
    assert (live / "dl-abc").exists()
    assert (elsewhere / "dl-abc").exists()


def test_bytes_the_store_refused_are_kept_for_the_next_try(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    download = staging.in_flight / "dl-1"
    download.write_bytes(b"image bytes")
    assert staging.kept("identity") is None
    kept = staging.keep("identity", "abc123", download)
    assert not download.exists()
    assert staging.kept("identity") == (kept, "abc123")
    assert kept.read_bytes() == b"image bytes"
    # Another process of the host (a restart) finds it too.
    assert Staging(tmp_path / "staging").kept("identity") == (kept, "abc123")


def test_kept_bytes_nobody_came_back_for_are_removed_after_a_day(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    old = staging.keep("old", "a1", _file(staging.in_flight / "dl-old"))
    young = staging.keep("young", "b2", _file(staging.in_flight / "dl-young"))
    past = time.time() - KEEP_SECONDS - 60
    os.utime(old, (past, past))
    Staging(tmp_path / "staging")
    assert not old.exists()
    assert young.exists()


def _file(path: Path) -> Path:
    path.write_bytes(b"x")
    return path
