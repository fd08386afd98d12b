"""The `imagesync` command, run in-process against a real SQLite file and PostgreSQL."""

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from imagesync.app import create_app
from imagesync.cli import app as cli
from imagesync.kit.settings import Settings
from tests.factories import auth
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
        await store.put_bytes(blob_key(sha), b"bytes")
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


def test_queue_shows_waiting_and_failed_products(env: str, tmp_path: Path) -> None:
    """Embedded mode: the products of jobs by status, with the failures' codes."""
    token = json.loads(invoke("accounts", "create", "acme", "--json")[1])["token"]

    async def submit() -> None:
        settings = Settings(
            database_url=env, storage_url=str(tmp_path / "files"), embedded_worker=False
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                body = {
                    "products": [
                        {"item_number": "missing", "images": []},
                        {
                            "item_number": "p1",
                            # Never fetched: no worker runs here.
                            "images": [{"url": "https://images.example.com/a.jpg", "sort": 1}],
                        },
                    ]
                }
                await client.post(
                    "/products/sync",
                    json={"products": [{"item_number": "p1", "variants": [{"sku": "p1-a"}]}]},
                    headers=auth(token),
                )
                response = await client.post(
                    "/products/images/sync", json=body, headers=auth(token)
                )
                assert response.status_code == 202, response.text

    asyncio.run(submit())
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


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["serve"], ["IMAGESYNC_HOST, else 127.0.0.1", "IMAGESYNC_PORT, else 8000"]),
        (["collect"], ["IMAGESYNC_BLOB_GRACE_DAYS, else 7"]),
        (["worker"], ["IMAGESYNC_WORKER_CONCURRENCY, else 5", "(default: all)"]),
    ],
)
def test_help_names_each_default(
    command: list[str], says: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one line per option
    code, output = invoke(*command, "--help")
    assert code == 0, output
    for words in says:
        assert words in output
    assert " .  " not in output  # a default swallowed as markup left "bind ."
