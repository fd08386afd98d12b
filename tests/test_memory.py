"""Memory of a real `imagesync serve` process tree under images that decode big.

The held-out case: five 381 KB PNGs of 7000 x 7000 16-bit RGBA (392 MB of pixels each)
and one JPEG in one sync. Before the decode budget it took the server from 121 MB to
2.2 GB, and it stayed there.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.media import samples
from tests.served import clean_env, create_token, serve_process

pytestmark = pytest.mark.slow


def tree_rss_mb(pid: int) -> float:
    """Resident memory of `pid` and all its descendants, in MB."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


class Sampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_mb(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[str]:
    """The test's pictures, served from a folder on 127.0.0.1."""
    folder = tmp_path / "origin"
    folder.mkdir()
    deep = samples.png16(7000, 7000)
    at = deep.index(b"IDAT") - 4
    for i in range(5):  # five files with other bytes: five blobs, five sets of renditions
        comment = f"copy {i}".encode()
        text = samples._chunk(b"tEXt", b"Comment\x00" + comment)
        (folder / f"deep-{i}.png").write_bytes(deep[:at] + text + deep[at:])
    (folder / "photo.jpg").write_bytes(samples.jpeg(2000, 1500))
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *_args: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_deep_pngs_stay_within_the_budget_and_memory_is_given_back(
    tmp_path: Path, origin: str
) -> None:
    env = {**clean_env(), "IMAGESYNC_FETCH_ALLOW": origin}
    token = create_token(tmp_path, env)
    auth = {"Authorization": f"Bearer {token}"}
    with serve_process(tmp_path, env) as (base, process):
        pid = process.pid
        created = httpx.post(
            f"{base}/products/sync",
            headers=auth,
            json={"products": [{"item_number": "deep", "name": "Deep", "variants": []}]},
        )
        assert created.status_code == 200, created.text
        time.sleep(1)
        idle = tree_rss_mb(pid)
        images = [{"url": f"http://{origin}/deep-{i}.png", "sort": i + 1} for i in range(5)] + [
            {"url": f"http://{origin}/photo.jpg", "sort": 6}
        ]
        with Sampler(pid) as sampler:
            synced = httpx.post(
                f"{base}/products/images/sync?wait=60",
                headers=auth,
                json={"products": [{"item_number": "deep", "images": images}]},
                timeout=90,
            )
            assert synced.status_code in (200, 202), synced.text
            job = synced.json()
            deadline = time.monotonic() + 240
            while job["status"] in ("queued", "running") and time.monotonic() < deadline:
                time.sleep(1)
                job = httpx.get(f"{base}/products/images/sync/{job['id']}", headers=auth).json()
            product = job["products"][0]
            assert product["status"] == "succeeded", product
            while time.monotonic() < deadline:
                read = httpx.get(f"{base}/products/deep/images", headers=auth).json()
                states = {r["state"] for i in read["images"] for r in i["renditions"]}
                if states and "pending" not in states:
                    break
                time.sleep(0.5)
            else:
                pytest.fail("renditions were not made within 4 minutes")
        assert states == {"ready"}
        time.sleep(1)
        after = tree_rss_mb(pid)
    assert sampler.peak <= 1024, f"peak {sampler.peak:.0f} MB (idle {idle:.0f} MB)"
    assert after <= 2 * idle, f"{after:.0f} MB after, {idle:.0f} MB idle"
