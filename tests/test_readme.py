"""The README's walk through, its "Syncing images" example and its push, and the webhook
receiver of docs/integrating.md, run as written, on this machine alone: the shell blocks
are taken from the documents and run by bash against a real `imagesync serve` (only the
ports are swapped for free ones)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.served import clean_env, free_port, serve

README = Path(__file__).parents[1] / "README.md"
INTEGRATING = README.parent / "docs" / "integrating.md"


def shell_blocks(section: str, document: Path = README) -> list[str]:
    text = document.read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", body, re.DOTALL)


def run_script(script: str, cwd: Path, env: dict[str, str]) -> str:
    """Run `script` with bash (stopping at the first failure); its output. Whatever it
    started in the background goes with it."""
    shell = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = shell.communicate(timeout=120)
    finally:
        # Gone already when the script and all it started have ended: the script's
        # output, below, says why.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGTERM)
    assert shell.returncode == 0, output
    return output


def on_ports(script: str, base: str, images_port: int) -> str:
    """The documents' script, with the service at `base` and the pictures served on
    `images_port` (for the documents' 8000 and 8080)."""
    return (
        script.replace("http://127.0.0.1:8000", base)
        .replace("127.0.0.1:8080", f"127.0.0.1:{images_port}")
        .replace("http.server 8080", f"http.server {images_port}")
    )


def test_the_walk_through_and_syncing_images_run_as_written(tmp_path: Path) -> None:
    images_port = free_port()
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    env = {**clean_env(), "IMAGESYNC_FETCH_ALLOW": f"127.0.0.1:{images_port}"}
    # The walk through, then the section's first block (the later ones configure storage).
    script = "\n".join(
        [
            *shell_blocks("A walk through the API"),
            shell_blocks("Syncing images")[0],
            *shell_blocks("Pushing a whole catalog"),
        ]
    )
    assert "http.server 8080" in script
    with serve(tmp_path, env) as base:
        output = run_script(on_ports(script, base, images_port), tmp_path, env)
    # The walk through: the product, its variants' codes, the typo's two problems.
    assert '"sku":"cool-product-001-100-XS"' in output
    assert '"pointer":"/products/0/item_numbr"' in output
    # The sync: four images created and downloaded; read back in sort order, each on its
    # colour's variant; the stored file a JPEG; the same list again downloads nothing.
    assert '"created":4,"kept":0' in output, output
    assert '"downloaded":4' in output
    black, white = '["cool-product-001-100-XS"]', '["cool-product-001-900-XS"]'
    on = re.findall(r'"alt":"(\w+), \w+","filename":"[^"]+","variants":(\[[^]]*\])', output)
    assert on == [("Black", black), ("Black", black), ("White", white), ("White", white)]
    assert "JPEG (480, 600)" in output
    again = '"created":0,"kept":4,"updated":0,"deleted":0,"skipped":0,"failed":0,"downloaded":0'
    assert again in output, output
    # The push: the plan (one updated, two kept, one deleted), then the push and its report.
    assert "Dry run: what a sync would do" in output
    assert re.search(r"cool-product-001 +│ +0 │ +2 │ +1 │ +1 │ +0 │ +0", output), output
    assert "Products by status" in output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["statuses"] == {"succeeded": 1}
    # --refresh: the file overwritten in place is refreshed, the others answered 304.
    assert re.search(r"│ refreshed +│ +1 │", output), output
    assert re.search(r"│ unchanged +│ +2 │", output), output


def test_the_webhook_receiver_runs_as_written(tmp_path: Path) -> None:
    """After the walk through: the receiver verifies each call and prints its event."""
    receiver_port = free_port()
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    env = {**clean_env(), "IMAGESYNC_FETCH_ALLOW": f"127.0.0.1:{receiver_port}"}
    walk_through = "\n".join(shell_blocks("A walk through the API"))
    (webhooks,) = shell_blocks("Webhooks: a call when a job ends", INTEGRATING)
    assert "127.0.0.1:9000" in webhooks
    with serve(tmp_path, env) as base:
        script = f"{walk_through}\n{webhooks}".replace("http://127.0.0.1:8000", base).replace(
            "127.0.0.1:9000", f"127.0.0.1:{receiver_port}"
        )
        script = script.replace('("127.0.0.1", 9000)', f'("127.0.0.1", {receiver_port})')
        output = run_script(script, tmp_path, env)
    assert "sync.product.failed no-such-product product_not_found" in output, output
    assert re.search(r"sync\.job\.finished [0-9a-f]{32} partially_failed", output), output
    deliveries = json.loads(output.strip().splitlines()[-1])["deliveries"]
    assert [d["status"] for d in deliveries] == ["delivered", "delivered"], deliveries
    assert [[a["status"] for a in d["attempts"]] for d in deliveries] == [[204], [204]]


def test_retries_warnings_and_metrics_run_as_written(tmp_path: Path) -> None:
    """docs/integrating.md's tour of an Idempotency-Key's retry, a rule's warning and
    /metrics, after the walk through and the first sync."""
    images_port = free_port()
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    (tour,) = shell_blocks("Safe retries, warnings and metrics, on this machine", INTEGRATING)
    token = "metrics-token-0123456789"
    assert f"IMAGESYNC_METRICS_TOKEN={token}" in INTEGRATING.read_text()
    env = {
        **clean_env(),
        "IMAGESYNC_FETCH_ALLOW": f"127.0.0.1:{images_port}",
        "IMAGESYNC_METRICS_TOKEN": token,
    }
    script = "\n".join(
        [*shell_blocks("A walk through the API"), shell_blocks("Syncing images")[0], tour]
    )
    with serve(tmp_path, env) as base:
        output = run_script(on_ports(script, base, images_port), tmp_path, env)
    assert "plan: black-01.jpg []" in output, output
    assert "plan: white-01.jpg ['unknown_attribute']" in output, output
    assert re.search(r"(?i)idempotent-replayed: true", output), output
    assert "one job: True succeeded" in output, output
    assert "job: black-01.jpg kept []" in output, output
    said = "no variant of this product has an attribute 'Colour'"
    assert f'job: white-01.jpg updated ["{said}' in output, output
    assert re.search(r'imagesync_downloads_total\{outcome="fetched"\} 4\.0', output), output
    assert re.search(r'imagesync_cluster_jobs_24h\{status="succeeded"\} [1-9]', output), output


def test_what_the_walk_through_makes_is_ignored_by_git() -> None:
    """It left images/, stored.jpg, catalog.csv and report.json in the repository (and the
    webhook receiver of docs/integrating.md, receiver.py and webhook.json, and its tour's
    batch.json, headers.txt and job-*.json)."""
    root = README.parent
    made = [
        "images/black-01.jpg",
        "stored.jpg",
        "catalog.csv",
        "report.json",
        "receiver.py",
        "webhook.json",
        "batch.json",
        "headers.txt",
        "job-first.json",
        "job-retry.json",
    ]
    if not (root / ".git").exists():  # an unpacked copy: read the rules
        rules = (root / ".gitignore").read_text().split()
        assert {f"/{m.split('/')[0]}" for m in made} <= {r.rstrip("/") for r in rules}
        return
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *made], cwd=root, capture_output=True, text=True
    )
    assert ignored.stdout.split() == made


def test_the_readme_explains_every_image_outcome() -> None:
    """`not_applied` appeared in results with no word on it."""
    from typing import get_args

    from imagesync.sync.schemas import Outcome

    text = README.read_text()
    for outcome in get_args(Outcome):
        assert f"`{outcome}`" in text, outcome
