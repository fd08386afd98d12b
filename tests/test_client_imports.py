"""What integrators import is a small public face: `imagesync.client` (and `push`, built
on it) load no server framework, database layer, queue or image library."""

from __future__ import annotations

import subprocess
import sys

SERVER = [
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "procrastinate",
    "uvicorn",
    "aiohttp",
    "obstore",
    "PIL",
    "jinja2",
]


def test_the_client_and_push_load_no_server_framework() -> None:
    code = (
        "import sys, imagesync.client, imagesync.push; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert "httpx" in loaded  # what the client is made of
    assert loaded.isdisjoint(SERVER), sorted(loaded & set(SERVER))
