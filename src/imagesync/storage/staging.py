"""Where downloads wait before they are stored, apart from the store itself: a full or
failing store must not take staging down with it, nor cost a download twice.

- `in_flight`: this process's private folder (0700) for bodies being downloaded. What a
  process of this host that is gone left behind (a kill mid-download) is removed when
  the next one starts.
- `kept`: downloads the store refused, kept by identity until a later attempt stores
  them, so that an attempt after a store outage does not download them again. Shared by
  the processes of one host; what nobody came back for within a day is removed.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

KEEP_SECONDS = 24 * 3600


class Staging:
    def __init__(self, parent: Path) -> None:
        parent = parent.resolve()
        _private_dir(parent)
        self.parent = parent
        self.in_flight = _process_dir(parent)
        self.kept_dir = _private_dir(parent / "kept")
        for entry in self.kept_dir.iterdir():
            if _older_than(entry, KEEP_SECONDS):
                entry.unlink(missing_ok=True)

    def keep(self, identity: str, sha256: str, path: Path) -> Path:
        """Keep a download whose store refused it, for the next attempt (`identity`: its
        digest); returns where it is now."""
        kept = self.kept_dir / f"{identity}.{sha256}"
        try:
            os.replace(path, kept)  # the same file system: a rename
        except OSError:
            shutil.move(path, kept)
        return kept

    def kept(self, identity: str) -> tuple[Path, str] | None:
        """A download kept for `identity`, and its sha256. Asked before every download,
        of a folder nearly always empty: its names are compared, not matched as a glob
        (a pattern compiled for every identity)."""
        prefix = f"{identity}."
        with os.scandir(self.kept_dir) as entries:
            for entry in entries:
                if entry.name.startswith(prefix):
                    return Path(entry.path), entry.name[len(prefix) :]
        return None

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.in_flight).free


def default_parent() -> Path:
    """`imagesync-UID` in the system's temporary folder: one user's processes share it."""
    return Path(tempfile.gettempdir()) / f"imagesync-{os.getuid()}"


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _process_dir(parent: Path) -> Path:
    """This process's folder, `parent/HOST-PID`; those of this host's processes that are
    gone are removed."""
    host = socket.gethostname()
    mine = _private_dir(parent / f"{host}-{os.getpid()}")
    for entry in parent.iterdir():
        if entry == mine or not entry.is_dir():
            continue
        owner_host, _, pid = entry.name.rpartition("-")
        if owner_host == host and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
    return mine


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False
