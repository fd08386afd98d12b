"""Scaled out on procrastinate, with real processes: `imagesync serve` only accepts and
enqueues, `imagesync worker` processes do the work, all sharing one PostgreSQL database
and one S3-compatible bucket (moto's server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
import pytest

from imagesync.client import AsyncClient as ImagesyncClient
from imagesync.kit.db import Base
from tests.conftest import S3Server
from tests.prometheus import samples, value
from tests.served import clean_env, free_port
from tests.sync.conftest import POISON_ALT, ImageServer, poison_trigger
from tests.waiting import wait_for

pytestmark = pytest.mark.postgres

PROCRASTINATE_TABLES = (
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_jobs",
    "procrastinate_workers",
)


@pytest.fixture
def queue_database(postgres_url: str) -> str:
    """The run's PostgreSQL database, emptied: the service's tables and the queue's."""
    tables = [t.name for t in Base.metadata.sorted_tables] + list(PROCRASTINATE_TABLES)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    return postgres_url


@dataclass
class Cluster:
    """Processes of one deployment: they share the database, the bucket and settings."""

    cwd: Path
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        with (self.cwd / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "imagesync", *args],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process

    def worker(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        return self.start("worker", "--name", name, *args, name=name)

    def log(self, name: str) -> str:
        return (self.cwd / f"{name}.log").read_text(errors="replace")

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "imagesync", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


@pytest.fixture
def cluster(
    tmp_path: Path, queue_database: str, s3_server: S3Server, image_server: ImageServer
) -> Iterator[Cluster]:
    port = image_server.base.rsplit(":", 1)[1]
    env = {
        **clean_env(),
        "IMAGESYNC_QUEUE": "procrastinate",
        "IMAGESYNC_DATABASE_URL": queue_database,
        "IMAGESYNC_STORAGE_URL": f"s3://{s3_server.new_bucket()}/catalog",
        "IMAGESYNC_S3_ENDPOINT": s3_server.endpoint,
        "IMAGESYNC_S3_REGION": s3_server.options.region,
        "IMAGESYNC_S3_ACCESS_KEY_ID": s3_server.options.access_key_id,
        "IMAGESYNC_S3_SECRET_ACCESS_KEY": s3_server.options.secret_access_key,
        "IMAGESYNC_FETCH_ALLOW": f"127.0.0.1:{port}",
        "IMAGESYNC_FETCH_RETRY_BASE_SECONDS": "0.05",
        # A killed worker is noticed after 1.5 s of silence, not 30 s.
        "IMAGESYNC_WORKER_HEARTBEAT_SECONDS": "0.5",
        "IMAGESYNC_WORKER_SHUTDOWN_GRACE_SECONDS": "20",
        "IMAGESYNC_RENDITION_WIDTHS": "",
        "IMAGESYNC_RATE_LIMIT": "0",  # the tests poll; the limit has tests of its own
    }
    found = Cluster(tmp_path, env)
    try:
        yield found
    finally:
        found.stop_all()


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    """The API process and a client with an account's token, its catalog: p1 and p2."""
    token = json.loads(cluster.run("accounts", "create", "acme", "--json"))["token"]
    port = free_port()
    cluster.start("serve", "--port", str(port), name="api")
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=20
    ) as client:

        async def up() -> bool:
            return (await client.get("/healthz")).status_code == 200

        await wait_for(up)
        response = await client.post(
            "/products/sync",
            json={
                "products": [
                    {"item_number": p, "variants": [{"sku": f"{p}-a"}]} for p in ("p1", "p2")
                ]
            },
        )
        assert response.status_code == 200, response.text
        yield client


async def post_sync(client: httpx.AsyncClient, item: str, images: list[dict[str, Any]]) -> str:
    response = await client.post(
        "/products/images/sync", json={"products": [{"item_number": item, "images": images}]}
    )
    assert response.status_code in (200, 202), response.text
    job_id: str = response.json()["id"]
    return job_id


async def job(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    found: dict[str, Any] = (await client.get(f"/products/images/sync/{job_id}")).json()
    return found


async def finished(client: httpx.AsyncClient, job_id: str, seconds: float = 45) -> dict[str, Any]:
    async def done() -> bool:
        return (await job(client, job_id))["status"] not in ("queued", "running")

    await wait_for(done, seconds)
    return await job(client, job_id)


async def urls_of(client: httpx.AsyncClient, item: str) -> list[str]:
    images = (await client.get(f"/products/{item}/images")).json()["images"]
    return [i["url"] for i in images]


def count_rows(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


async def test_with_every_worker_down_jobs_wait_then_two_workers_drain_them(
    cluster: Cluster, api: httpx.AsyncClient, image_server: ImageServer
) -> None:
    jobs = [
        await post_sync(api, item, [{"url": image_server.add(f"{item}-{n}.jpg"), "sort": n}])
        for item in ("p1", "p2")
        for n in (1, 2)
    ]
    await asyncio.sleep(1.0)
    assert [(await job(api, j))["status"] for j in jobs] == ["queued"] * 4
    assert sum(image_server.hits.values()) == 0  # the API process downloads nothing
    waiting = json.loads(cluster.run("queue", "--json"))  # what an operator sees
    assert waiting["products"]["queued"] == 4
    assert waiting["jobs"]["sync"]["todo"] == 4
    assert waiting["workers"] == 0

    cluster.worker("w1")
    cluster.worker("w2")
    for job_id in jobs:
        assert (await finished(api, job_id))["status"] == "succeeded"
    drained = json.loads(cluster.run("queue", "--json"))
    assert drained["products"] == {"succeeded": 4}
    assert "todo" not in drained["jobs"].get("sync", {})
    assert drained["workers"] == 2
    # Each product ends with its last list; every URL was fetched once.
    assert await urls_of(api, "p1") == [image_server.url("p1-2.jpg")]
    assert await urls_of(api, "p2") == [image_server.url("p2-2.jpg")]
    assert all(hits == 1 for hits in image_server.hits.values()), image_server.hits


async def test_a_worker_killed_mid_download_loses_nothing(
    cluster: Cluster, api: httpx.AsyncClient, image_server: ImageServer, queue_database: str
) -> None:
    slow = image_server.add("slow.jpg", delay=60)
    fast = image_server.add("fast.jpg")
    job_id = await post_sync(api, "p1", [{"url": fast, "sort": 1}, {"url": slow, "sort": 2}])
    doomed = cluster.worker("doomed")

    async def downloading() -> bool:
        return image_server.hits["slow.jpg"] >= 1

    await wait_for(downloading)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    image_server.routes["slow.jpg"].delay = 0

    cluster.worker("survivor")
    read = await finished(api, job_id)
    assert read["status"] == "succeeded", read
    assert await urls_of(api, "p1") == [fast, slow]  # exactly its images, each once
    assert count_rows(queue_database, "image") == 2
    assert count_rows(queue_database, "blob") == 2
    assert count_rows(queue_database, "source") == 2
    assert image_server.hits["slow.jpg"] == 2  # the cut-off download, then the rerun


async def test_overlapping_syncs_across_two_workers_end_with_the_last_submitted(
    cluster: Cluster, api: httpx.AsyncClient, image_server: ImageServer
) -> None:
    cluster.worker("w1", "--concurrency", "2")
    cluster.worker("w2", "--concurrency", "2")
    lists = []
    for n in range(6):
        # Slow and fast origins alternate: a later sync's download may finish first.
        url = image_server.add(f"round-{n}.jpg", delay=0.8 if n % 2 == 0 else 0.0)
        lists.append([{"url": url, "sort": 1, "alt": f"round {n}"}])
    jobs = [await post_sync(api, "p1", images) for images in lists]
    statuses = [(await finished(api, j))["status"] for j in jobs]
    assert statuses[-1] == "succeeded"
    assert set(statuses) <= {"succeeded", "superseded"}
    assert await urls_of(api, "p1") == [lists[-1][0]["url"]]


def drop_poison(url: str, drop: list[str]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in drop:
            conn.execute(statement)


async def test_a_poison_product_ends_failed_after_its_attempts(
    cluster: Cluster,
    api: httpx.AsyncClient,
    image_server: ImageServer,
    request: pytest.FixtureRequest,
) -> None:
    cluster.env["IMAGESYNC_TASK_MAX_ATTEMPTS"] = "2"
    cluster.worker("w1")
    # The database refuses this image at apply time, every time.
    create, drop = poison_trigger("postgresql")
    with psycopg.connect(cluster.env["IMAGESYNC_DATABASE_URL"], autocommit=True) as conn:
        for statement in drop + create:
            conn.execute(statement)
    request.addfinalizer(lambda: drop_poison(cluster.env["IMAGESYNC_DATABASE_URL"], drop))
    poison = [{"url": image_server.add("x.jpg"), "sort": 1, "alt": POISON_ALT}]
    job_id = await post_sync(api, "p1", poison)
    healthy = await post_sync(api, "p2", [{"url": image_server.add("y.jpg"), "sort": 1}])
    read = await finished(api, job_id)
    assert read["status"] == "failed", read
    error = read["products"][0]["error"]
    assert error["code"] == "internal_error"
    assert "after 2 attempts" in error["detail"]
    assert "\n" not in error["detail"]
    assert (await finished(api, healthy))["status"] == "succeeded"
    assert await urls_of(api, "p1") == []  # nothing of it was applied


async def test_a_bucket_refusing_writes_is_shown_at_once_and_nothing_is_downloaded_twice(
    cluster: Cluster, api: httpx.AsyncClient, image_server: ImageServer, s3_server: S3Server
) -> None:
    s3, bucket = bucket_of(cluster, s3_server)
    s3.delete_bucket(Bucket=bucket)  # every write is refused from now
    urls = [image_server.add("a.jpg"), image_server.add("b.jpg")]
    job_id = await post_sync(api, "p1", [{"url": u, "sort": i} for i, u in enumerate(urls)])
    cluster.worker("w1")
    cluster.worker("w2")

    async def shown() -> bool:
        product = (await job(api, job_id))["products"][0]
        return (product.get("error") or {}).get("code") == "storage_error"

    await wait_for(shown, 20)
    read = await job(api, job_id)
    assert read["status"] == "running", read
    s3.create_bucket(Bucket=bucket)

    read = await finished(api, job_id)
    assert read["status"] == "succeeded", read
    assert await urls_of(api, "p1") == urls
    assert image_server.hits["a.jpg"] == 1
    assert image_server.hits["b.jpg"] == 1


def bucket_of(cluster: Cluster, s3_server: S3Server) -> tuple[Any, str]:
    bucket = cluster.env["IMAGESYNC_STORAGE_URL"].removeprefix("s3://").split("/")[0]
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        aws_access_key_id=s3_server.options.access_key_id,
        aws_secret_access_key=s3_server.options.secret_access_key,
        region_name=s3_server.options.region,
    )
    return s3, bucket


async def test_a_store_down_longer_than_an_attempt_waits_costs_no_download_twice(
    cluster: Cluster, api: httpx.AsyncClient, image_server: ImageServer, s3_server: S3Server
) -> None:
    """The outage outlasts what one attempt waits with the bytes in hand (1.5 s here, 4
    minutes by default): the attempt ends, its bytes are kept, and the later attempts,
    on either worker, store them without asking the origin again. It was: after the
    waits, every product failed for good, or downloaded again."""
    cluster.env["IMAGESYNC_STORE_WAIT_SECONDS"] = "1.5"
    s3, bucket = bucket_of(cluster, s3_server)
    s3.delete_bucket(Bucket=bucket)
    lists = {
        item: [{"url": image_server.add(f"{item}-{n}.jpg"), "sort": n} for n in range(3)]
        for item in ("p1", "p2")
    }
    jobs = [await post_sync(api, item, images) for item, images in lists.items()]
    cluster.worker("w1")
    cluster.worker("w2")

    async def attempts_spent() -> bool:
        details = [
            (p.get("error") or {}).get("detail", "")
            for j in jobs
            for p in (await job(api, j))["products"]
        ]
        return all("attempt 2 of 5" in d or "attempt 3 of 5" in d for d in details)

    await wait_for(attempts_spent, 30)  # each product's first attempt gave up
    s3.create_bucket(Bucket=bucket)
    for job_id in jobs:
        read = await finished(api, job_id, 60)
        assert read["status"] == "succeeded", read
    for item, images in lists.items():
        assert await urls_of(api, item) == [i["url"] for i in images]
    assert sorted(image_server.hits.values()) == [1] * 6, image_server.hits


async def test_database_connections_cut_while_eight_clients_post_lose_nothing(
    cluster: Cluster, api: httpx.AsyncClient, image_server: ImageServer, queue_database: str
) -> None:
    """Every backend of the database is terminated, six times over three seconds, while
    eight clients post a round every half second and two workers run: the clients' calls succeed
    (a cut request is a 503 they send again), every job ends, and every product has
    exactly its last list."""
    token = api.headers["Authorization"].removeprefix("Bearer ")
    items = [f"c-{n}" for n in range(16)]
    created = await api.post(
        "/products/sync", json={"products": [{"item_number": i} for i in items]}
    )
    assert created.status_code == 200, created.text
    cluster.worker("w1")
    cluster.worker("w2")
    last: dict[str, list[dict[str, Any]]] = {}
    cutting = asyncio.Event()

    async def cut() -> int:
        cuts = 0
        with psycopg.connect(queue_database, autocommit=True) as admin:
            for _ in range(6):
                await asyncio.sleep(0.5)
                row = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchone()
                cuts += int(row[0]) if row else 0
        cutting.set()
        return cuts

    async def client(n: int) -> list[str]:
        jobs = []
        async with ImagesyncClient(str(api.base_url), token, max_backoff=2) as one:
            rounds = 0
            while not cutting.is_set():
                for item in items[n::8]:
                    images = [
                        {"url": image_server.add(f"{item}-{rounds}-{k}.jpg"), "sort": k}
                        for k in range(2)
                    ]
                    jobs.append(
                        (await one.sync_images([{"item_number": item, "images": images}])).id
                    )
                    last[item] = images
                rounds += 1
                await asyncio.sleep(0.5)
        return jobs

    cutter = asyncio.create_task(cut())
    posted = await asyncio.gather(*(client(n) for n in range(8)))
    assert await cutter > 0
    statuses = [(await finished(api, job_id, 60))["status"] for jobs in posted for job_id in jobs]
    assert set(statuses) <= {"succeeded", "superseded"}, statuses
    for item, images in last.items():
        assert await urls_of(api, item) == [i["url"] for i in images], item
    assert count_rows(queue_database, "image") == 32


async def test_sigterm_drains_the_work_in_hand_and_exits_0(
    cluster: Cluster, api: httpx.AsyncClient, image_server: ImageServer
) -> None:
    url = image_server.add("slowish.jpg", delay=2)
    job_id = await post_sync(api, "p1", [{"url": url, "sort": 1}])
    worker = cluster.worker("w1")

    async def downloading() -> bool:
        return image_server.hits["slowish.jpg"] >= 1

    await wait_for(downloading)
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 30) == 0, cluster.log("w1")
    read = await job(api, job_id)
    assert read["status"] == "succeeded", read  # finished before it exited
    assert image_server.hits["slowish.jpg"] == 1


async def test_a_stop_past_its_grace_says_which_jobs_it_handed_back(
    cluster: Cluster, api: httpx.AsyncClient, image_server: ImageServer
) -> None:
    """It logged only `worker.stopped`; the job cut off goes back and another worker
    finishes it."""
    cluster.env["IMAGESYNC_WORKER_SHUTDOWN_GRACE_SECONDS"] = "1"
    url = image_server.add("very-slow.jpg", delay=30)
    job_id = await post_sync(api, "p1", [{"url": url, "sort": 1}])
    worker = cluster.worker("w1")

    async def downloading() -> bool:
        return image_server.hits["very-slow.jpg"] >= 1

    await wait_for(downloading)
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 30) == 0, cluster.log("w1")
    stopped = [line for line in cluster.log("w1").splitlines() if "worker.stopped" in line]
    assert len(stopped) == 1, cluster.log("w1")
    assert "'task': 'sync.run_product'" in stopped[0]
    assert "'seq': 1" in stopped[0]
    image_server.routes["very-slow.jpg"].delay = 0
    cluster.worker("w2")
    assert (await finished(api, job_id))["status"] == "succeeded"


async def test_a_slow_origin_of_one_account_does_not_hold_up_another(
    cluster: Cluster, api: httpx.AsyncClient, image_server: ImageServer
) -> None:
    """Under procrastinate too: a worker of five slots (the default) runs at most four
    products of one account, however many it starts at once; the others wait for their
    turn (looked at again a second later) while another account's product runs."""
    cluster.worker("w1")
    token = json.loads(cluster.run("accounts", "create", "slow", "--json"))["token"]
    slow = {"Authorization": f"Bearer {token}"}
    items = [{"item_number": f"b-{n}"} for n in range(5)]
    created = await api.post("/products/sync", json={"products": items}, headers=slow)
    assert created.status_code == 200, created.text
    products = [
        {
            "item_number": f"b-{n}",
            "images": [
                {"url": image_server.add(f"b-{n}-{i}.jpg", delay=30.0), "sort": i} for i in range(3)
            ],
        }
        for n in range(5)
    ]
    waiting = await api.post("/products/images/sync", json={"products": products}, headers=slow)
    assert waiting.status_code == 202, waiting.text
    await asyncio.sleep(2.0)  # the worker has taken what the slow account may run

    start = time.monotonic()
    mine = {"item_number": "p1", "images": [{"url": image_server.add("p1.jpg"), "sort": 1}]}
    answer = await api.post("/products/images/sync?wait=15", json={"products": [mine]})
    elapsed = time.monotonic() - start
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "succeeded"
    assert elapsed < 5, f"waited {elapsed:.1f} s behind the slow account"
    read = await api.get(f"/products/images/sync/{waiting.json()['id']}", headers=slow)
    running = [p for p in read.json()["products"] if p["status"] == "running"]
    assert len(running) == 4


def test_the_worker_refuses_to_run_the_embedded_queue(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "imagesync", "worker"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "IMAGESYNC_QUEUE=procrastinate" in done.stderr


def test_procrastinate_on_sqlite_is_refused_at_start(tmp_path: Path) -> None:
    env = {**clean_env(), "IMAGESYNC_QUEUE": "procrastinate"}
    done = subprocess.run(
        [sys.executable, "-m", "imagesync", "serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "IMAGESYNC_QUEUE=procrastinate needs PostgreSQL" in done.stderr
    assert "IMAGESYNC_DATABASE_URL" in done.stderr


async def test_a_worker_answers_its_own_metrics_on_its_port(
    cluster: Cluster, api: httpx.AsyncClient, image_server: ImageServer
) -> None:
    """What a worker downloaded is counted there, and read from it (IMAGESYNC_METRICS_PORT)."""
    port, token = free_port(), "metrics-token-0123456789"
    cluster.env = {
        **cluster.env,
        "IMAGESYNC_METRICS_TOKEN": token,
        "IMAGESYNC_METRICS_PORT": str(port),
    }
    cluster.worker("w1")
    job_id = await post_sync(api, "p1", [{"url": image_server.add("m.jpg"), "sort": 1}])
    assert (await finished(api, job_id))["status"] == "succeeded"
    url = f"http://127.0.0.1:{port}/metrics"
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).status_code == 401
        answer = await http.get(url, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    found = samples(answer.text)
    assert value(found, "imagesync_downloads_total", outcome="fetched") == 1
    assert value(found, "imagesync_products_ended_total", status="succeeded") == 1
    assert not any(name.startswith("imagesync_cluster_") for name, _ in found)  # the API's
