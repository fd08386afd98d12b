"""The benchmark suite: imagesync driven over HTTP by a separate client process, against
bare baselines measured in the same run, in the embedded default (SQLite, local files)
and scaled out (PostgreSQL, IMAGESYNC_QUEUE=procrastinate, one API and one worker); with
`--modes embedded-pg`, also the embedded queue on PostgreSQL (one serve running
procrastinate's worker itself).

    .venv/bin/python bench/run.py            # make bench: 1x and 10x catalogs
    .venv/bin/python bench/run.py --quick    # make bench-quick: a smoke run, no speed asserted

Prints one table and writes bench/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from baselines import bare_diff, bare_pipeline
from bodies import attributes_body, image_bodies, product_bodies
from catalog import COLORS, Catalog, build
from nginx import free_port, serving

HERE = Path(__file__).parent
PYTHON = sys.executable
POSTGRES_ADMIN = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
DOWNLOAD_CONCURRENCY = 8
NOOP_REQUESTS = 300
FILE_URLS, FILE_REQUESTS = 50, 2000


@dataclass
class Service:
    mode: str
    env: dict[str, str]
    cwd: Path
    database_url: str  # for the bare diff (a synchronous SQLAlchemy URL)
    base: str = ""
    token: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [PYTHON, "-m", "imagesync", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"imagesync {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def start(self, name: str, *args: str) -> None:
        log = (self.cwd / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [PYTHON, "-m", "imagesync", *args], cwd=self.cwd, env=self.env, stdout=log, stderr=log
        )

    def peak_rss_mb(self) -> dict[str, float]:
        """Each process's peak resident memory so far (VmHWM), those that `serve` started
        included: `api/work` is its work process, `api/1`, `api/2` ... its API processes
        (`api` itself only supervises them)."""
        peaks = {}
        for name, process in self.processes.items():
            peaks[name] = _peak_rss_mb(process.pid)
            api = 0
            for pid in _children(process.pid):
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"imagesync.serving" in command:
                    peaks[f"{name}/work"] = _peak_rss_mb(pid)
                elif b"multiprocessing.spawn" in command:
                    api += 1
                    peaks[f"{name}/{api}"] = _peak_rss_mb(pid)
        return peaks

    def queue(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.cli("queue", "--json"))
        return found


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@contextmanager
def running(
    mode: str, images_base: str, settings: dict[str, str] | None = None
) -> Iterator[Service]:
    """A fresh deployment of `mode`: its own database and storage folder; `settings`
    (`IMAGESYNC_*` variables) on top of the bench's own."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{mode}-") as tmp:
        cwd = Path(tmp)
        port = images_base.rsplit(":", 1)[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGESYNC_")}
        env |= {
            "IMAGESYNC_STORAGE_URL": str(cwd / "files"),
            "IMAGESYNC_FETCH_ALLOW": f"127.0.0.1:{port}",
            "IMAGESYNC_LOG_LEVEL": "warning",
            # The bench measures throughput, not the limiter: one token sends thousands
            # of requests a minute.
            "IMAGESYNC_RATE_LIMIT": "0",
            "IMAGESYNC_DOWNLOAD_CONCURRENCY": str(DOWNLOAD_CONCURRENCY),
        } | (settings or {})
        database = ""
        if mode == "embedded":
            env["IMAGESYNC_DATABASE_URL"] = f"sqlite:///{cwd / 'imagesync.db'}"
            sync_url = f"sqlite:///{cwd / 'imagesync.db'}"
        else:
            database = f"imagesync_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{database}"')
            url = POSTGRES_ADMIN.rsplit("/", 1)[0] + "/" + database
            env["IMAGESYNC_DATABASE_URL"] = url
            if mode == "procrastinate":
                env["IMAGESYNC_QUEUE"] = "procrastinate"
            sync_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
        service = Service(mode, env, cwd, sync_url)
        try:
            service.cli("migrate")
            service.token = json.loads(service.cli("accounts", "create", "bench", "--json"))[
                "token"
            ]
            api_port = free_port()
            service.base = f"http://127.0.0.1:{api_port}"
            service.start("api", "serve", "--port", str(api_port), "--no-migrate")
            if mode == "procrastinate":
                service.start("worker", "worker")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{service.base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            else:
                raise RuntimeError(f"the {mode} API did not come up")
            yield service
        finally:
            for process in service.processes.values():
                process.terminate()
            for process in service.processes.values():
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
            if database:
                with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def set_up_catalog(service: Service, catalog: Catalog) -> None:
    headers = {"Authorization": f"Bearer {service.token}"}
    with httpx.Client(base_url=service.base, headers=headers, timeout=120) as client:
        response = client.post("/attributes/sync", json=attributes_body())
        response.raise_for_status()
        for body in product_bodies(catalog):
            client.post("/products/sync", json=body).raise_for_status()


def drive(
    service: Service,
    catalog: Catalog,
    images_base: str,
    clients: int,
    *,
    base: str = "",
    repeat: int = 1,
) -> dict[str, Any]:
    """The client process against the service (or, given `base`, the bare HTTP floor),
    sending the catalog's requests `repeat` times."""
    done = subprocess.run(
        [
            PYTHON,
            str(HERE / "driver.py"),
            "--base",
            base or service.base,
            "--token",
            service.token,
            "--products",
            str(len(catalog.products)),
            "--images-base",
            images_base,
            "--clients",
            str(clients),
            "--repeat",
            str(repeat),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def wait_for_renditions(service: Service, since: float, timeout: float = 3600) -> float:
    """Seconds from `since` until no rendition is pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = service.queue()
        if not status["renditions"].get("pending") and not status["products"].get("queued"):
            return time.perf_counter() - since
        time.sleep(1)
    raise RuntimeError("renditions did not finish")


def non_2xx(result: dict[str, Any]) -> int:
    return sum(n for code, n in result["answers"].items() if not code.startswith("2"))


def measure(
    mode: str,
    catalog: Catalog,
    images_base: str,
    *,
    full: bool,
    settings: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One catalog size in one mode, on a fresh deployment."""
    out: dict[str, Any] = {
        "mode": mode,
        "products": len(catalog.products),
        "images": catalog.images,
    }
    with running(mode, images_base, settings) as service:
        set_up_catalog(service, catalog)
        started = time.perf_counter()
        first = drive(service, catalog, images_base, clients=32)
        out["first_import"] = first | {
            "images_per_second": first["images"] / first["finished_seconds"]
        }
        out["last_rendition_seconds"] = wait_for_renditions(service, started)
        bodies = image_bodies(catalog, images_base)
        # Each no-op pass sends at least NOOP_REQUESTS requests: enough to measure.
        repeat = -(-NOOP_REQUESTS // len(bodies))
        clients = (8, 32, 1) if full else (8,)
        for n in clients:
            out[f"noop_{n}"] = drive(service, catalog, images_base, n, repeat=repeat)
        out["bare_diff_products_per_second"] = bare_diff(service.database_url, bodies)
        out["files"] = serve_files(service, requests=FILE_REQUESTS // (4 if not full else 1))
        out["big_reads"] = big_reads(service, catalog, images_base, full=full)
        out["peak_rss_mb"] = service.peak_rss_mb()
        with bare_http(service) as base:
            for n in clients:
                # Four times the requests: it answers them ten times faster, and a pass
                # under a second is mostly noise.
                out[f"bare_http_{n}"] = drive(
                    service, catalog, images_base, n, base=base, repeat=4 * repeat
                )
    return out


BIG_VARIANTS, BIG_IMAGES = 1000, 250  # the big product: each image on 25 variants
SIZES = [(f"Size {n}", f"S{n}") for n in range(4)]


def big_product_body(catalog: Catalog, images_base: str, variants: int, images: int) -> Any:
    """A product of `variants` variants (colour x size) and `images` images, each image on
    the variants of one colour and size (a fortieth of them); the images' bytes are the
    catalog's first picture, each under an `existance_key` of its own."""
    colours = [name for name, _ in COLORS]
    product = {
        "item_number": "big-product",
        "variants": [
            {
                "sku": f"big-{n}",
                "attributes": {"Colour": colours[n % 10], "Size": SIZES[(n // 10) % 4][0]},
            }
            for n in range(variants)
        ],
    }
    picture = f"{images_base}/{catalog.products[0].images[0]}"
    synced = {
        "item_number": "big-product",
        "images": [
            {
                "url": picture,
                "existance_key": f"big-{i}",
                "sort": i,
                "attach_to_variants_matching_attribute_code": {
                    "Colour": COLORS[i % 10][1],
                    "Size": SIZES[(i // 10) % 4][1],
                },
            }
            for i in range(images)
        ],
    }
    return product, synced


def reads(action: str, urls: list[str], *args: str, token: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            PYTHON,
            str(HERE / "reads.py"),
            action,
            *urls,
            *args,
            "--header",
            f"Authorization: Bearer {token}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def big_reads(service: Service, catalog: Catalog, images_base: str, *, full: bool) -> Any:
    """`/healthz` and a small product's images, idle and while 8 clients read the big
    product's images over and over (their first page, as a client starts); the big
    product's read itself."""
    headers = {"Authorization": f"Bearer {service.token}"}
    variants, images = (BIG_VARIANTS, BIG_IMAGES) if full else (100, 50)
    size = {"name": "Size", "values": [{"value": v, "code": c} for v, c in SIZES]}
    product, synced = big_product_body(catalog, images_base, variants, images)
    with httpx.Client(base_url=service.base, headers=headers, timeout=600) as client:
        client.post("/attributes/sync", json={"attributes": [size]}).raise_for_status()
        client.post("/products/sync", json={"products": [product]}).raise_for_status()
        job = client.post("/products/images/sync?wait=60", json={"products": [synced]}).json()
        while job["status"] in ("queued", "running"):
            time.sleep(0.5)
            job = client.get(f"/products/images/sync/{job['id']}").json()
        assert job["status"] == "succeeded", job
    health = f"{service.base}/healthz"
    small = f"{service.base}/products/{catalog.products[0].item_number}/images"
    big = f"{service.base}/products/big-product/images"
    probes = "100" if full else "20"

    def probe(urls: list[str], requests: str) -> dict[str, Any]:
        process = reads("probe", urls, "--requests", requests, token=service.token)
        out, _ = process.communicate(timeout=1800)
        result: dict[str, Any] = json.loads(out)
        return result

    idle = probe([health, small], probes)
    alone = probe([big], "5" if full else "3")[big]
    hammer = reads("hammer", [big], "--clients", "8", token=service.token)
    try:
        time.sleep(2)  # every client has a read under way
        # As many as idle, so that each p99 is taken over as many requests (over 30 it
        # was their maximum); the maximum is printed beside it.
        loaded = probe([health, small], probes)
    finally:
        hammer.terminate()
        out, _ = hammer.communicate(timeout=600)
    return {
        "variants": variants,
        "images": images,
        "big_read": alone,
        "healthz": {"idle": idle[health], "loaded": loaded[health]},
        "small_read": {"idle": idle[small], "loaded": loaded[small]},
        "hammer_reads": json.loads(out)["reads"] if out else None,
    }


def files(urls: list[str], requests: int, *, revalidate: bool = False) -> dict[str, Any]:
    """The file client (bench/files.py) over these URLs, 8 connections."""
    command = [PYTHON, str(HERE / "files.py"), "--clients", "8", "--requests", str(requests)]
    if revalidate:
        command.append("--revalidate")
    done = subprocess.run(
        [*command, *urls],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def serve_files(service: Service, requests: int) -> dict[str, Any]:
    """The API's file route against nginx serving the same bytes (the catalog's
    originals, which the service stored as they were), with the same client; and the
    file route revalidated (`If-None-Match`, answered 304)."""
    headers = {"Authorization": f"Bearer {service.token}"}
    page = httpx.get(f"{service.base}/products?limit=20", headers=headers, timeout=60).json()
    images = [i for p in page["products"] for i in p["images"]][:FILE_URLS]
    return {
        "api": files([i["file_url"] for i in images], requests),
        "nginx": files([i["url"] for i in images], requests),
        "api_revalidated": files([i["file_url"] for i in images], requests, revalidate=True),
    }


@contextmanager
def bare_http(service: Service) -> Iterator[str]:
    """The bare HTTP floor (bench/bare_http.py) on the service's database, served by
    uvicorn as `serve` is; its base URL."""
    port = free_port()
    url = service.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    log = (service.cwd / "bare_http.log").open("ab")
    process = subprocess.Popen(
        [
            *(PYTHON, "-m", "uvicorn", "bare_http:app", "--app-dir", str(HERE)),
            *("--port", str(port), "--log-level", "warning"),
        ],
        env=os.environ | {"BARE_DATABASE_URL": url},
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the bare HTTP floor did not come up") from None
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def check(result: dict[str, Any]) -> list[str]:
    """What must hold in any run, fast or slow: every answer 2xx, every job succeeded,
    and a no-op re-send answered 200 with its finished job."""
    problems = []
    for kind, served in result["files"].items():
        expected = {"304"} if kind == "api_revalidated" else {"200"}
        if set(served["answers"]) != expected:
            problems.append(f"{result['mode']} files, {kind}: answers {served['answers']}")
    for phase in ("first_import", "noop_8", "noop_32", "noop_1", "bare_http_8"):
        found = result.get(phase)
        if found is None:
            continue
        if non_2xx(found):
            problems.append(f"{result['mode']} {phase}: {non_2xx(found)} answers were not 2xx")
        if set(found["waited_jobs_final"]) - {"succeeded"}:
            problems.append(f"{result['mode']} {phase}: jobs ended {found['waited_jobs_final']}")
        if phase.startswith("noop") and found["answers"].get("202"):
            problems.append(
                f"{result['mode']} {phase}: {found['answers']['202']} no-op answers were 202"
            )
    return problems


def rate(result: dict[str, Any]) -> float:
    """Products per second over the posting phase."""
    return float(result["products"] / result["posted_seconds"])


# The no-op re-sync's target, as a share of the bare HTTP floor on the same database.
NOOP_FLOOR = {"embedded": 0.5, "embedded-pg": 0.35, "procrastinate": 0.35}


def row(label: str, value: str, ratio: str = "", target: str = "") -> str:
    return f"| {label} | {value} | {ratio} | {target} |"


def table(results: dict[str, Any]) -> str:
    lines = [
        f"machine: {results['machine']}",
        "",
        "| measure | value | against the bare baseline | target |",
        "| --- | --- | --- | --- |",
    ]
    for size, pipeline in results["bare_pipeline"].items():
        lines.append(row(f"bare pipeline, {size}", f"{pipeline:.0f} images/s"))
    for r in results["runs"]:
        name = f"{r['mode']}, {r['products']} products"
        pipeline = results["bare_pipeline"][str(r["products"])]
        first = r["first_import"]
        lines += [
            row(
                f"{name}: first import",
                f"{first['images_per_second']:.0f} images/s",
                f"{first['images_per_second'] / pipeline:.2f}",
                ">= 0.5",
            ),
            row(f"{name}: last rendition ready", f"{r['last_rendition_seconds']:.1f} s"),
            row(
                f"{name}: POST latency during downloads (32 clients)",
                "p50 {p50:.3f} s, p99 {p99:.3f} s, max {max:.3f} s".format(**first["latency"]),
                "",
            ),
            row(f"{name}: non-2xx answers (first import)", str(non_2xx(first)), "", "0"),
        ]
        floor = NOOP_FLOOR[r["mode"]]
        for clients in (8, 32, 1):
            noop, bare = r.get(f"noop_{clients}"), r.get(f"bare_http_{clients}")
            if noop is None:
                continue
            against = ""
            if bare is not None:
                against = (
                    f"{rate(noop) / rate(bare):.3f} of the bare HTTP floor ({rate(bare):.0f}/s)"
                )
            if clients == 8:
                against += f"; {rate(noop) / r['bare_diff_products_per_second']:.3f} of the "
                against += f"bare diff ({r['bare_diff_products_per_second']:.0f}/s)"
            lines.append(
                row(
                    f"{name}: no-op re-sync ({clients} clients)",
                    f"{rate(noop):.0f} products/s",
                    against,
                    f">= {floor} of the floor" if clients != 8 else "",
                )
            )
        if "noop_32" in r:
            noop_p99 = r["noop_32"]["latency"]["p99"]
            lines += [
                row(
                    f"{name}: POST latency during the no-op re-sync (32 clients)",
                    "p50 {p50:.3f} s, p99 {p99:.3f} s, max {max:.3f} s".format(
                        **r["noop_32"]["latency"]
                    ),
                    f"non-2xx: {non_2xx(r['noop_32'])}",
                ),
                row(
                    f"{name}: POST p99 during downloads against the no-op pass's (32 clients)",
                    f"{first['latency']['p99']:.3f} s / {noop_p99:.3f} s",
                    f"{first['latency']['p99'] / noop_p99:.2f}",
                    "<= 1.5",
                ),
            ]
        served = r["files"]
        api, nginx = served["api"]["requests_per_second"], served["nginx"]["requests_per_second"]
        lines += [
            row(
                f"{name}: the file route (8 clients)",
                f"{api:.0f} files/s, {served['api']['megabytes_per_second']:.0f} MB/s",
                f"{api / nginx:.2f} of nginx ({nginx:.0f} files/s)",
                ">= 0.5",
            ),
            row(
                f"{name}: the file route revalidated (304)",
                f"{served['api_revalidated']['requests_per_second']:.0f} answers/s",
                str(served["api_revalidated"]["answers"]),
            ),
        ]
        big = r["big_reads"]
        shape = f"{big['variants']} variants x {big['images']} images"
        lines.append(
            row(
                f"{name}: the first page of a product of {shape}",
                f"p50 {big['big_read']['p50']:.3f} s, {big['big_read']['bytes'] / 1e6:.1f} MB",
                f"{big['big_read']['p50'] / big['small_read']['idle']['p50']:.0f}x a small "
                "product's read",
                "<= 10x (its first page)",
            )
        )
        for label, key in (("/healthz", "healthz"), ("a small product's read", "small_read")):
            idle, loaded = big[key]["idle"]["p99"], big[key]["loaded"]["p99"]
            most = big[key]["loaded"]["max"]
            lines.append(
                row(
                    f"{name}: {label} p99 while 8 clients read it",
                    f"{loaded * 1000:.1f} ms, max {most * 1000:.1f} (idle {idle * 1000:.1f} ms)",
                    f"{loaded / idle:.1f}x idle",
                    "<= 5x",
                )
            )
        rss = ", ".join(f"{k} {v:.0f} MB" for k, v in r["peak_rss_mb"].items())
        lines.append(row(f"{name}: peak RSS", rss, "", "<= 300 MB"))
    for mode in MODES:
        runs = sorted(
            (r for r in results["runs"] if r["mode"] == mode), key=lambda r: r["products"]
        )
        if len(runs) == 2:
            small, big = runs
            scale = big["products"] / small["products"]
            first = (
                big["first_import"]["finished_seconds"] / small["first_import"]["finished_seconds"]
            )
            noop = (
                (big["noop_8"]["posted_seconds"] / big["noop_8"]["requests"])
                / (small["noop_8"]["posted_seconds"] / small["noop_8"]["requests"])
                * scale
            )
            lines.append(
                row(
                    f"{mode}: {scale:.0f}x catalog costs",
                    f"first import {first:.1f}x, no-op {noop:.1f}x the time",
                    "",
                    f"<= {1.1 * scale:.0f}x",
                )
            )
    return "\n".join(lines)


MODES = ("embedded", "embedded-pg", "procrastinate")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny, no speed asserted")
    parser.add_argument("--products", type=int, default=100, help="products in the 1x catalog")
    parser.add_argument(
        "--modes",
        default="embedded,procrastinate",
        help=f"of {', '.join(MODES)} (embedded-pg: the embedded queue on PostgreSQL, "
        "procrastinate's worker inside serve)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="IMAGESYNC_NAME=VALUE",
        help="a setting of the service under test (A/B runs); repeatable",
    )
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.set)
    sizes = [20] if args.quick else [args.products, 10 * args.products]
    results: dict[str, Any] = {
        "machine": f"{platform.node()}, {os.cpu_count()} cores, {platform.python_version()}",
        "quick": args.quick,
        "bare_pipeline": {},
        "runs": [],
    }
    for size in sizes:
        catalog = build(size)
        with serving(catalog.root) as images_base:
            results["bare_pipeline"][str(size)] = asyncio.run(
                bare_pipeline(catalog, images_base, DOWNLOAD_CONCURRENCY)
            )
            for mode in args.modes.split(","):
                print(f"{mode}, {size} products ...", file=sys.stderr, flush=True)
                results["runs"].append(
                    measure(
                        mode,
                        catalog,
                        images_base,
                        full=not args.quick and size == sizes[0],
                        settings=settings,
                    )
                )
    (HERE / "results.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    problems = [p for r in results["runs"] for p in check(r)]
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
