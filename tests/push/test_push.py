"""`imagesync push` as an integrator runs it: a real process sending a CSV export to a
real `imagesync serve`, which fetches from a real image server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import csv
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from imagesync.client import AsyncClient, Client, InvalidRequest, NotFound, Unauthorized
from imagesync.sync.examples import FINISHED_JOB_EXAMPLE
from imagesync.sync.schemas import SyncJobRead
from tests.served import clean_env, create_token, free_port, serve
from tests.sync.conftest import ImageServer

PRODUCTS = 100
IMAGES = 10  # per product: 1,000 rows
COLUMNS = ["item_number", "url", "sort", "alt", "attr:Color", "skip_if_no_variant_matches"]


@dataclass
class Api:
    base: str
    token: str

    def client(self) -> AsyncClient:
        return AsyncClient(self.base, self.token)


def served_env(tmp_path: Path, image_server: ImageServer, **settings: str) -> dict[str, str]:
    """A served process's settings: SQLite and files here, fetching from `image_server`."""
    return {
        **clean_env(),
        "IMAGESYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'imagesync.db'}",
        "IMAGESYNC_STORAGE_URL": str(tmp_path / "files"),
        "IMAGESYNC_FETCH_ALLOW": image_server.base.removeprefix("http://"),
        "IMAGESYNC_RENDITION_WIDTHS": "",
        "IMAGESYNC_LOG_LEVEL": "warning",
        **settings,
    }


@pytest.fixture
async def api(tmp_path: Path, image_server: ImageServer) -> AsyncIterator[Api]:
    env = served_env(tmp_path, image_server)
    token = create_token(tmp_path, env)
    with serve(tmp_path, env) as base:
        api = Api(base, token)
        async with api.client() as client:
            await client.sync_attributes(
                [{"name": "Color", "values": [{"value": "Black", "code": "100"}]}]
            )
            await client.sync_products(
                [
                    {
                        "item_number": f"p{n:03}",
                        "variants": [{"sku": f"p{n:03}-black", "attributes": {"Color": "Black"}}],
                    }
                    for n in range(PRODUCTS)
                ]
            )
        yield api


def catalog_rows(image_server: ImageServer) -> list[dict[str, str]]:
    rows = []
    for n in range(PRODUCTS):
        for i in range(IMAGES):
            path = f"p{n:03}/{i}.jpg"
            rows.append(
                {
                    "item_number": f"p{n:03}",
                    "url": image_server.add(path),
                    "sort": str(i + 1),
                    "alt": f"Rød kjole {n}, billede {i}",
                    "attr:Color": "100" if i < 2 else "",
                    "skip_if_no_variant_matches": "",
                }
            )
    return rows


def write_csv(path: Path, rows: list[dict[str, str]], delimiter: str = ";") -> Path:
    # As a spreadsheet exports it: semicolons, a BOM, CRLF.
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, delimiter=delimiter, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def push(
    api: Api, *args: str, interrupt_when: asyncio.Event | None = None
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "imagesync",
        "push",
        *args,
        env={**clean_env(), "IMAGESYNC_URL": api.base, "IMAGESYNC_TOKEN": api.token},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # Interruptible however the tests were started: a shell without job control
        # starts its background commands with SIGINT ignored, and a child inherits that.
        preexec_fn=_interruptible,
    )
    if interrupt_when is not None:
        await asyncio.wait_for(interrupt_when.wait(), 60)
        process.send_signal(signal.SIGINT)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def images_of(api: Api, item_number: str) -> list[tuple[str, int, list[str]]]:
    async with api.client() as client:
        found = await client.product_images(item_number)
    return [(i.url, i.sort, i.variants) for i in found.images]


async def test_an_export_with_invalid_rows_and_failing_urls_ends_in_a_true_report(
    api: Api, image_server: ImageServer, tmp_path: Path
) -> None:
    rows = catalog_rows(image_server)
    rows[15]["sort"] = "first"  # p001, line 17
    rows[42]["url"] = "ftp://cdn.test/a.jpg"  # p004, line 44
    rows[71]["url"] = rows[70]["url"]  # p007, line 73: the same image twice
    for n in (20, 21, 22):  # three products each with a URL the origin does not have
        rows[n * IMAGES + 3]["url"] = image_server.url(f"missing/{n}.jpg")
    export = write_csv(tmp_path / "catalog.csv", rows)

    code, out, err = await push(api, str(export))
    assert code == 2, out + err
    assert f"{export}: line 17, column sort: " in err
    assert f"{export}: line 44, column url: " in err
    assert f"{export}: line 73, column url: the same url as the image at line 72" in err
    assert "Nothing was sent: 3 of 100 products are invalid" in err
    assert sum(image_server.hits.values()) == 0

    report = tmp_path / "report.json"
    code, out, err = await push(api, str(export), "--skip-invalid", "--report", str(report))
    assert code == 1, out + err
    written = json.loads(report.read_text())
    assert sorted({p["item_number"] for p in written["invalid_in_file"]}) == [
        "p001",
        "p004",
        "p007",
    ]
    assert {f["item_number"] for f in written["failed"]} == {"p020", "p021", "p022"}
    assert written["error_codes"] == {"download_http_error": 3}
    [missing] = next(f for f in written["failed"] if f["item_number"] == "p020")["images"]
    assert (missing["url"], missing["code"]) == (
        image_server.url("missing/20.jpg"),
        "download_http_error",
    )
    assert written["statuses"] == {"succeeded": 94, "failed": 3}
    assert "Products by status" in out
    assert "Top error codes" in out
    # Each product holds exactly the file's images, in order, on the right variants.
    got = await images_of(api, "p010")
    assert got == [
        (r["url"], int(r["sort"]), ["p010-black"] if r["attr:Color"] else []) for r in rows[100:110]
    ]
    # A failed product kept what it had (nothing), and nothing was downloaded twice.
    assert await images_of(api, "p020") == []
    assert max(image_server.hits.values()) == 1


async def test_an_interrupted_push_run_again_converges_without_downloading_twice(
    api: Api, image_server: ImageServer, tmp_path: Path
) -> None:
    rows = catalog_rows(image_server)
    export = write_csv(tmp_path / "catalog.csv", rows, delimiter=",")
    halfway = asyncio.Event()

    async def watch() -> None:
        while sum(image_server.hits.values()) < len(rows) // 3:
            await asyncio.sleep(0.05)
        # The rest come slowly from now on: a fast import does not finish the push before
        # the interrupt reaches it.
        for route in image_server.routes.values():
            route.delay = 0.5
        halfway.set()

    watcher = asyncio.create_task(watch())
    code, out, err = await push(api, str(export), "--concurrency", "2", interrupt_when=halfway)
    await watcher
    assert code == 130, out + err
    assert "run the same command again to finish" in err
    assert sum(image_server.hits.values()) < len(rows)

    for route in image_server.routes.values():
        route.delay = 0.0
    code, out, err = await push(api, str(export))
    assert code == 0, out + err
    for n in (0, 50, 99):
        expected = rows[n * IMAGES : (n + 1) * IMAGES]
        assert [url for url, _, _ in await images_of(api, f"p{n:03}")] == [
            r["url"] for r in expected
        ]
    assert set(image_server.hits) == {r["url"].removeprefix(image_server.base + "/") for r in rows}
    assert max(image_server.hits.values()) == 1


async def test_a_dry_run_shows_the_plan_and_changes_nothing(
    api: Api, image_server: ImageServer, tmp_path: Path
) -> None:
    rows = catalog_rows(image_server)[: 3 * IMAGES]
    export = tmp_path / "catalog.jsonl"
    export.write_text(
        "\n".join(
            json.dumps(
                {
                    "item_number": f"p{n:03}",
                    "images": [
                        {"url": r["url"], "sort": int(r["sort"])}
                        for r in rows[n * IMAGES : (n + 1) * IMAGES]
                    ],
                }
            )
            for n in range(3)
        )
    )
    report = tmp_path / "plan.json"
    code, out, err = await push(api, str(export), "--dry-run", "--report", str(report))
    assert code == 0, out + err
    assert "nothing was changed" in out
    plans = json.loads(report.read_text())["plans"]
    assert [p["counts"]["create"] for p in plans] == [IMAGES] * 3
    assert [p["counts"]["download"] for p in plans] == [IMAGES] * 3
    assert sum(image_server.hits.values()) == 0
    assert await images_of(api, "p000") == []


async def test_the_client_waits_out_a_429_as_its_retry_after_says() -> None:
    answers = [
        web.json_response(
            {
                "errors": [
                    {"status": 429, "code": "rate_limited", "title": "Slow down", "detail": "x"}
                ]
            },
            status=429,
            headers={"Retry-After": "1"},
        ),
        web.json_response(FINISHED_JOB_EXAMPLE),
    ]
    seen: list[float] = []

    async def sync(_: web.Request) -> web.Response:
        seen.append(time.monotonic())
        return answers[len(seen) - 1]

    app = web.Application()
    app.router.add_post("/products/images/sync", sync)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with AsyncClient(f"http://127.0.0.1:{runner.addresses[0][1]}", "token") as client:
            job = await client.sync_images([{"item_number": "a", "images": []}])
    finally:
        await runner.cleanup()
    assert isinstance(job, SyncJobRead)
    assert job.status == "partially_failed"
    assert len(seen) == 2
    assert seen[1] - seen[0] >= 1.0


def test_the_blocking_client_carries_traedes_error_objects(api: Api) -> None:
    with Client(api.base, api.token) as client:
        with pytest.raises(InvalidRequest) as refused:
            client.sync_images([{"item_number": "p000", "images": [{"url": "x", "sort": 1}]}])
        assert refused.value.status == 422
        assert refused.value.errors[0].source is not None
        assert refused.value.errors[0].source.pointer == "/products/0/images/0/url"
        with pytest.raises(NotFound):
            client.product_images("no-such-product")
        plan = client.plan_images([{"item_number": "p000", "images": []}])
        assert plan.products[0].status == "planned"
        assert [p.item_number for p in client.products(limit=2).products] == ["p000", "p001"]
    with Client(api.base, "isk_wrong") as client, pytest.raises(Unauthorized) as unknown:
        client.attributes()
    assert unknown.value.errors[0].code == "unauthorized"


async def test_a_batch_over_the_body_limit_is_sent_in_halves(
    tmp_path: Path, image_server: ImageServer
) -> None:
    env = served_env(tmp_path, image_server, IMAGESYNC_MAX_BODY_BYTES="4096")
    token = create_token(tmp_path, env)
    with serve(tmp_path, env) as base:
        api = Api(base, token)
        async with api.client() as client:
            await client.sync_products([{"item_number": f"p{n:03}"} for n in range(10)])
        rows = [
            {"item_number": f"p{n:03}", "url": image_server.add(f"{n}/{i}.jpg"), "sort": str(i)}
            for n in range(10)
            for i in range(4)
        ]
        export = write_csv(tmp_path / "catalog.csv", [{**r, "alt": "x" * 80} for r in rows])
        code, out, err = await push(api, str(export))
        assert code == 0, out + err
        assert "succeeded │       10" in out


async def test_a_refused_token_is_said_before_anything_is_sent_and_exits_2(
    api: Api, tmp_path: Path, image_server: ImageServer
) -> None:
    """It was a table row `unauthorized` and exit code 1."""
    path = write_csv(tmp_path / "catalog.csv", catalog_rows(image_server)[:20])
    wrong = Api(api.base, "isk_" + "x" * 40)
    code, stdout, stderr = await push(wrong, str(path))
    assert code == 2, (stdout, stderr)
    assert "refused the token (isk_xxxx...): check --token or IMAGESYNC_TOKEN" in stderr
    assert "Nothing was sent" in stderr
    assert "unauthorized" not in stdout
    assert sum(image_server.hits.values()) == 0


async def test_a_service_out_of_reach_is_said_while_retrying_and_at_the_end(
    tmp_path: Path, image_server: ImageServer
) -> None:
    """It retried for 13.5 s in silence and then showed only `not_sent`."""
    path = write_csv(tmp_path / "catalog.csv", catalog_rows(image_server)[:20])
    nobody = Api(f"http://127.0.0.1:{free_port()}", "isk_" + "x" * 40)
    started = time.monotonic()
    code, _, stderr = await push(nobody, str(path))
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 1, stderr
    assert any("connection refused; trying again in" in line for line in lines), stderr
    assert lines[-1] == f"cannot reach {nobody.base}: connection refused. Nothing was sent."
    assert time.monotonic() - started < 30


async def test_a_rule_that_matches_nothing_is_a_warning_and_strict_makes_it_fail(
    api: Api, tmp_path: Path, image_server: ImageServer
) -> None:
    """A CSV whose attr:Color held the value's name ("Black") instead of its code: push
    exited 0 with nothing said."""
    row = {
        "item_number": "p000",
        "url": image_server.add("p000/named.jpg"),
        "sort": "1",
        "alt": "",
        "attr:Color": "Black",
        "skip_if_no_variant_matches": "",
    }
    path = write_csv(tmp_path / "named.csv", [row])
    report = tmp_path / "report.json"
    code, stdout, stderr = await push(api, str(path), "--report", str(report))
    assert code == 0, (stdout, stderr)
    said = " ".join(stdout.split())
    assert "Warnings: 1 image whose rule matched no variant" in said
    assert "unknown_attribute_code" in said
    assert "--strict makes this exit 1" in said
    [warning] = json.loads(report.read_text())["warnings"]
    assert (warning["item_number"], warning["code"]) == ("p000", "unknown_attribute_code")
    assert "Color code 'Black'" in warning["detail"]

    code, stdout, _ = await push(api, str(path), "--strict")
    assert code == 1, stdout
    code, stdout, _ = await push(api, str(path), "--dry-run", "--strict")
    assert code == 1, stdout
    assert "unknown_attribute_code" in stdout
