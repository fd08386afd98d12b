"""The `imagesync` command, run in-process against a real SQLite file and PostgreSQL."""

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from imagesync.app import create_app
from imagesync.cli import app as cli
from imagesync.kit.db import current_revision
from imagesync.kit.settings import Settings
from tests.factories import auth
from tests.served import clean_env
from tests.web.test_admin_lists import sign_in

runner = CliRunner()


@pytest.fixture
def env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("IMAGESYNC_DATABASE_URL", database_url)
    return database_url


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(cli, list(args))
    return result.exit_code, result.stdout


async def status_with(database_url: str, token: str) -> int:
    app = create_app(Settings(database_url=database_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return (await client.get("/products", headers=auth(token))).status_code


def test_accounts_create_json_prints_a_working_token(env: str) -> None:
    code, output = invoke("accounts", "create", "acme", "--json")
    assert code == 0, output
    assert output.endswith("}\n")  # one line, ended: a shell prompt does not join it
    printed = json.loads(output)
    assert printed["account"] == "acme"
    assert printed["token"].startswith("isk_")

    assert asyncio.run(status_with(env, printed["token"])) == 200


def test_account_names_are_unique(env: str) -> None:  # noqa: ARG001
    assert invoke("accounts", "create", "acme")[0] == 0
    code, _ = invoke("accounts", "create", "acme")
    assert code == 1
    code, output = invoke("accounts", "list")
    assert code == 0
    assert output.count("acme") == 1


def test_tokens_create_list_and_revoke(env: str) -> None:

    first = json.loads(invoke("accounts", "create", "acme", "--json")[1])["token"]
    code, output = invoke("tokens", "create", "acme", "--json")
    assert code == 0
    second = json.loads(output)["token"]

    code, output = invoke("tokens", "revoke", first[:12])
    assert code == 0, output
    assert asyncio.run(status_with(env, first)) == 401
    assert asyncio.run(status_with(env, second)) == 200

    code, output = invoke("tokens", "list", "acme")
    assert code == 0
    assert first[:12] in output
    assert second[:12] in output
    assert first not in output
    assert second not in output


@pytest.mark.parametrize("length", [8, 16, 30])
def test_tokens_are_revoked_by_any_prefix_of_eight_or_more(env: str, length: int) -> None:
    token = json.loads(invoke("accounts", "create", "acme", "--json")[1])["token"]
    code, output = invoke("tokens", "revoke", token[:length])
    assert code == 0, output  # longer than the 12 characters kept was "no active token"
    assert "revoked" in output
    assert asyncio.run(status_with(env, token)) == 401
    assert invoke("tokens", "revoke", token[:7])[0] == 1  # too short to name one


def test_admin_sessions_are_listed_and_ended(env: str) -> None:
    token = json.loads(invoke("accounts", "create", "acme", "--json")[1])["token"]
    assert asyncio.run(admin_status_after_sign_in(env, token, revoke=False)) == 200
    code, output = invoke("sessions", "list", "acme")
    assert code == 0, output
    assert token[:12] in output
    code, output = invoke("sessions", "revoke", "acme")
    assert code == 0, output
    assert "1 admin session of acme ended" in output
    code, output = invoke("sessions", "list", "acme")
    assert token[:12] not in output
    assert invoke("sessions", "list", "nobody")[0] == 1


async def admin_status_after_sign_in(database_url: str, token: str, *, revoke: bool) -> int:
    """Sign in to the admin pages with `token`, then read a page (after revoking it)."""
    app = create_app(Settings(database_url=database_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await sign_in(client, token)
            if revoke:
                # The command runs its own event loop: in a thread, as from another shell.
                assert (await asyncio.to_thread(invoke, "tokens", "revoke", token))[0] == 0
            return (await client.get("/admin/products")).status_code


def test_revoking_a_token_by_command_ends_its_admin_sessions(env: str) -> None:
    token = json.loads(invoke("accounts", "create", "acme", "--json")[1])["token"]
    assert asyncio.run(admin_status_after_sign_in(env, token, revoke=True)) == 303


def test_revoking_an_unknown_token_fails(env: str) -> None:  # noqa: ARG001
    invoke("accounts", "create", "acme")
    assert invoke("tokens", "revoke", "isk_zzzzzzzz")[0] == 1
    assert invoke("tokens", "create", "nobody")[0] == 1


def test_bad_settings_exit_2_with_the_variable_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMAGESYNC_PROT", "1")
    result = runner.invoke(cli, ["migrate"])
    assert result.exit_code == 2
    assert "IMAGESYNC_PROT" in result.stderr


def test_the_clients_variables_live_beside_the_servers(
    env: str,  # noqa: ARG001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The README exports IMAGESYNC_URL and IMAGESYNC_TOKEN for push; the server's
    commands in that same shell were refused with "IMAGESYNC_TOKEN: unknown setting"."""
    monkeypatch.setenv("IMAGESYNC_URL", "http://127.0.0.1:8000")
    monkeypatch.setenv("IMAGESYNC_TOKEN", "isk_whatever")
    assert invoke("accounts", "create", "acme")[0] == 0
    code, output = invoke("accounts", "list")
    assert code == 0, output
    assert "acme" in output
    monkeypatch.setenv("IMAGESYNC_TOKNE", "isk_whatever")  # a typo is still refused
    result = runner.invoke(cli, ["accounts", "list"])
    assert result.exit_code == 2
    assert "IMAGESYNC_TOKNE: unknown setting" in result.stderr


def test_collect_deletes_files_unused_past_the_grace_period(
    env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from imagesync.kit.db import create_engine, create_sessionmaker, migrate, session_scope, utcnow
    from imagesync.storage.models import Blob
    from imagesync.storage.store import blob_key, open_store

    files = tmp_path / "files"
    monkeypatch.setenv("IMAGESYNC_STORAGE_URL", str(files))
    store = open_store(str(files))

    async def stored_unused(sha: str, days_ago: float) -> None:
        await store.put_bytes(blob_key(sha), b"bytes", content_type="image/jpeg")
        engine = create_engine(Settings(database_url=env).async_database_url)
        async with session_scope(create_sessionmaker(engine)) as session:
            session.add(
                Blob(
                    sha256=sha,
                    size=5,
                    content_type="image/jpeg",
                    width=1,
                    height=1,
                    storage_key=blob_key(sha),
                    last_used_at=utcnow() - timedelta(days=days_ago),
                )
            )
        await engine.dispose()

    migrate(Settings(database_url=env).async_database_url)
    asyncio.run(stored_unused("a" * 64, days_ago=30))
    asyncio.run(stored_unused("b" * 64, days_ago=3))

    code, output = invoke("collect")
    assert code == 0, output
    assert "deleted 1 unused image(s) (1 stored files)" in output
    assert not (files / blob_key("a" * 64)).exists()
    assert (files / blob_key("b" * 64)).exists()

    result = runner.invoke(cli, ["collect", "--grace-days", "1"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "deleted 1 unused image(s)" in result.stdout
    assert not (files / blob_key("b" * 64)).exists()


def post_all(
    env: str, tmp_path: Path, token: str, *requests: tuple[str, dict[str, Any], int]
) -> None:
    """Each (path, body, expected status) in order, to an app without its runners (the
    products that need a download stay queued)."""

    async def send() -> None:
        settings = Settings(
            database_url=env, storage_url=str(tmp_path / "files"), embedded_worker=False
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                for path, body, status in requests:
                    answer = await client.post(path, json=body, headers=auth(token))
                    assert answer.status_code == status, answer.text

    asyncio.run(send())


def test_queue_shows_waiting_and_failed_products(env: str, tmp_path: Path) -> None:
    """Embedded mode: the products of jobs by status, with the failures' codes."""
    token = json.loads(invoke("accounts", "create", "acme", "--json")[1])["token"]
    catalog = {"products": [{"item_number": "p1", "variants": [{"sku": "p1-a"}]}]}
    images = {
        "products": [
            {"item_number": "missing", "images": []},
            # Never fetched: no worker runs here.
            {
                "item_number": "p1",
                "images": [{"url": "https://images.example.com/a.jpg", "sort": 1}],
            },
        ]
    }
    post_all(
        env,
        tmp_path,
        token,
        ("/products/sync", catalog, 200),
        ("/products/images/sync", images, 202),
    )
    code, output = invoke("queue", "--json")
    assert code == 0, output
    found = json.loads(output)
    # No worker runs (IMAGESYNC_EMBEDDED_WORKER=false): p1 waits for its download; the
    # unknown product was answered within the request.
    assert found["products"] == {"queued": 1, "failed": 1}
    assert found["failed_codes"] == {"product_not_found": 1}
    assert found["oldest_queued_seconds"] is not None
    code, output = invoke("queue")
    assert code == 0
    assert "product_not_found" in output


def test_queue_shows_what_fails_now_apart_from_the_days_history(env: str, tmp_path: Path) -> None:
    """A product that failed and has since succeeded is history, not failing now: the
    last day's failures were counted as if they still were."""
    token = json.loads(invoke("accounts", "create", "acme", "--json")[1])["token"]
    images = ("/products/images/sync", {"products": [{"item_number": "p1", "images": []}]}, 200)
    post_all(env, tmp_path, token, images)  # p1 is not in the catalog yet
    failing = json.loads(invoke("queue", "--json")[1])
    assert failing["failing_codes"] == {"product_not_found": 1}
    assert failing["failed_codes"] == {"product_not_found": 1}

    post_all(
        env, tmp_path, token, ("/products/sync", {"products": [{"item_number": "p1"}]}, 200), images
    )
    fixed = json.loads(invoke("queue", "--json")[1])
    assert fixed["failing_codes"] == {}
    assert fixed["failed_codes"] == {"product_not_found": 1}
    code, output = invoke("queue")
    assert code == 0
    assert "failed in the last 24 h: product_not_found" in output
    assert "failing now" not in output


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["serve"], ["IMAGESYNC_HOST, else 127.0.0.1", "IMAGESYNC_PORT, else 8000"]),
        (["collect"], ["IMAGESYNC_BLOB_GRACE_DAYS, else 7"]),
        (["worker"], ["IMAGESYNC_WORKER_CONCURRENCY, else 5", "(default: all)"]),
    ],
)
def test_help_names_each_default(command: list[str], says: list[str]) -> None:
    # One line per option.
    result = runner.invoke(cli, [*command, "--help"], terminal_width=200, max_content_width=200)
    code, output = result.exit_code, result.stdout
    assert code == 0, output
    for words in says:
        assert words in output
    assert " .  " not in output  # a default swallowed as markup left "bind ."


@pytest.mark.parametrize(
    "command",
    [["push"], ["serve"], ["worker"], ["collect"], ["demo"], ["accounts", "create"]],
)
def test_help_reads_as_sentences_with_named_placeholders(command: list[str]) -> None:
    """Help wrapped mid-sentence where the docstrings break lines, options read
    `--help <bool>`, `--url <str>`, `<list[str]>`, and arguments `{FILE} <str>`."""
    result = runner.invoke(cli, [*command, "--help"], terminal_width=200, max_content_width=200)
    output = result.stdout
    assert result.exit_code == 0, output
    assert not re.search(r"<(bool|str|int|float|path|list)", output), output
    usage = output.splitlines()[0]
    assert not re.search(r"[{}]", usage), usage
    assert usage.endswith("[OPTIONS]") or re.search(r"\[OPTIONS\] [A-Z]+$", usage), usage
    description = output.split("\n\n")[1]  # the docstring's first paragraph
    lines = description.strip().splitlines()
    assert all(len(line) > 150 for line in lines[:-1]), description  # broken only when full


def command(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`imagesync ARGS` in a process of its own, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "imagesync", *args],
        cwd=cwd,
        env={**clean_env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("args", [("accounts", "list"), ("migrate",), ("serve",), ("queue",)])
def test_a_database_out_of_reach_is_one_sentence_and_exit_1(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    """It was 700+ lines of traceback."""
    refused = "postgresql://postgres:secret@127.0.0.1:1/catalog"  # nothing listens on port 1
    done = command(*args, cwd=tmp_path, IMAGESYNC_DATABASE_URL=refused)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2, done.stderr
    assert "cannot reach the database at postgresql+psycopg://postgres:***@127.0.0.1:1/catalog" in (
        done.stderr
    )
    assert "(IMAGESYNC_DATABASE_URL)" in done.stderr
    assert "secret" not in done.stderr

    debug = command(*args, cwd=tmp_path, IMAGESYNC_DATABASE_URL=refused, IMAGESYNC_DEBUG="1")
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr


@pytest.mark.postgres
def test_a_database_that_does_not_exist_is_named(postgres_url: str, tmp_path: Path) -> None:
    missing = postgres_url.rsplit("/", 1)[0] + "/no_such_database"
    done = command("migrate", cwd=tmp_path, IMAGESYNC_DATABASE_URL=missing)
    assert done.returncode == 1
    assert 'database "no_such_database" does not exist' in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_folder_is_an_error_except_for_migrate(tmp_path: Path) -> None:
    """It was created silently, with a new empty database in it."""
    url = f"sqlite:///{tmp_path}/typo/imagesync.db"
    done = command("accounts", "list", cwd=tmp_path, IMAGESYNC_DATABASE_URL=url)
    assert done.returncode == 2
    assert f"the folder {tmp_path}/typo does not exist" in " ".join(done.stderr.split())
    assert not (tmp_path / "typo").exists()

    made = command("migrate", cwd=tmp_path, IMAGESYNC_DATABASE_URL=url)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "typo" / "imagesync.db").exists()
    # The default folder (./data) is still made by any command: `make run` on a clone.
    assert command("accounts", "list", cwd=tmp_path).returncode == 0
    assert (tmp_path / "data" / "imagesync.db").exists()


def test_migrate_says_what_it_applied(tmp_path: Path) -> None:
    """It said "database is up to date" after creating every table."""
    first = command("migrate", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    head = current_revision(f"sqlite+aiosqlite:///{tmp_path}/data/imagesync.db")
    assert (
        first.stdout.strip() == f"applied the migrations from an empty database to revision {head}"
    )
    again = command("migrate", cwd=tmp_path)
    assert again.stdout.strip() == f"database is up to date (revision {head}): nothing to apply"


@pytest.mark.parametrize("args", [("accounts", "create", "acme"), ("tokens", "create", "acme")])
def test_json_output_comes_alone(args: tuple[str, ...], tmp_path: Path) -> None:
    """`accounts create --json` also printed log lines on stderr."""
    if args[0] == "tokens":
        assert command("accounts", "create", "acme", cwd=tmp_path).returncode == 0
    done = command(*args, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["account"] == "acme"
    assert done.stderr == ""
