"""nginx (Debian's nginx-light) serving a folder on 127.0.0.1, started and stopped by its
pid; installed with apt-get when missing."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CONFIG = """
daemon off;
{user}
worker_processes 1;
pid {pid};
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    types {{ image/jpeg jpg; }}
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def ensure_installed() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found:
        return found
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "nginx-light"],
        check=True,
        stdout=subprocess.DEVNULL,
        env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    return shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serving(root: Path) -> Iterator[str]:
    """`http://127.0.0.1:PORT`, serving the files under `root`, for the block's duration."""
    binary = ensure_installed()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as prefix:
        config = Path(prefix) / "nginx.conf"
        config.write_text(
            CONFIG.format(
                user=_user(),
                pid=Path(prefix) / "nginx.pid",
                prefix=prefix,
                port=port,
                root=root,
            )
        )
        process = subprocess.Popen([binary, "-c", str(config), "-p", prefix])
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            else:
                raise RuntimeError("nginx did not start")
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()  # its pid: nothing else is touched
            process.wait(timeout=10)


def _user() -> str:
    """Started as root, nginx's worker would serve as `nobody`, which cannot read a
    checkout under a private folder (`mktemp -d`, a home of mode 0700): it answered 403
    to every file. Its worker stays the bench's own user instead."""
    return "user root;" if os.geteuid() == 0 else ""
