"""The `imagesync` command: serve, worker, queue, migrate, collect, demo, push, accounts,
tokens."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession
from typer.core import TyperArgument, TyperCommand

from imagesync.catalog import auth as catalog_auth
from imagesync.catalog import repository
from imagesync.kit.db import create_engine, create_sessionmaker, migrate, session_scope
from imagesync.kit.errors import ImageSyncError
from imagesync.kit.logging import configure_logging
from imagesync.kit.settings import Settings, SettingsError, ensure_sqlite_directory, load_settings
from imagesync.web import sessions


def _default(setting: str) -> Any:
    """A setting's built-in default, for help texts (written in parentheses: typer reads
    square brackets as markup and drops them)."""
    return Settings.model_fields[setting].default


class _Argument(TyperArgument):
    """An argument named as usage lines name them: `FILE`, not Typer's `{FILE} <str>`."""

    def _usage_display_name(self) -> str:
        return self.display_name_raw if self.required else f"[{self.display_name_raw}]"

    def display_type_rich(self, ctx: Any) -> str | None:  # noqa: ARG002 (its signature)
        return None


class _Command(TyperCommand):
    """A command whose arguments read as `_Argument` says."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if type(param) is TyperArgument:
                param.__class__ = _Argument


app = typer.Typer(
    help="imagesync: keeps product images in sync with an external source.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
accounts_app = typer.Typer(help="Manage accounts.", no_args_is_help=True)
tokens_app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(tokens_app, name="tokens")
sessions_app = typer.Typer(help="See and end admin page sessions.", no_args_is_help=True)
app.add_typer(sessions_app, name="sessions")

err = Console(stderr=True)
out = Console()
T = TypeVar("T")


def main() -> None:
    """The `imagesync` command. A part it cannot reach (the database, the queue, Redis)
    is one sentence naming the setting and what was tried, with exit code 1; the
    traceback only with `IMAGESYNC_DEBUG=1` (or `--debug` before the command)."""
    debug = "--debug" in sys.argv[1:2] or os.environ.get("IMAGESYNC_DEBUG", "").lower() in (
        "1",
        "true",
    )
    if "--debug" in sys.argv[1:2]:
        sys.argv.pop(1)
    try:
        app()
    except Exception as exc:
        sentence = unreachable(exc)
        if sentence is None or debug:
            raise
        err.print(f"[red]error:[/red] {sentence}", highlight=False, soft_wrap=True)
        err.print("(the whole traceback: IMAGESYNC_DEBUG=1)", style="dim", highlight=False)
        raise SystemExit(1) from None


def unreachable(exc: BaseException) -> str | None:
    """The sentence for a part that cannot be reached, if `exc` (or its cause) is one."""
    import psycopg
    import sqlalchemy.exc
    from procrastinate.exceptions import ConnectorException

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.OperationalError | psycopg.OperationalError):
            return _database_sentence(seen)
        if isinstance(seen, ConnectorException) and seen.__cause__ is not None:
            seen = seen.__cause__
            continue
        redis_down = type(seen).__name__ in ("ConnectionError", "TimeoutError")
        if redis_down and type(seen).__module__.startswith("redis"):
            return f"cannot reach Redis (IMAGESYNC_RATE_LIMIT_STORAGE): {_first_line(seen)}"
        seen = seen.__cause__ or seen.__context__
    return None


def _database_sentence(exc: BaseException) -> str:
    from sqlalchemy.engine import make_url

    try:
        url = make_url(load_settings().async_database_url).render_as_string(hide_password=True)
    except Exception:
        url = "the configured database"
    detail = _first_line(getattr(exc, "orig", None) or exc)
    return f"cannot reach the database at {url} (IMAGESYNC_DATABASE_URL): {detail}"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _settings(
    *, create_database: bool = False, quiet: bool = False, **overrides: object
) -> Settings:
    """The settings; `quiet`: only warnings are logged (output meant for a program)."""
    try:
        settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
        ensure_sqlite_directory(settings, create=create_database)
    except SettingsError as exc:
        err.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(2) from exc
    level = settings.log_level
    if quiet and level in ("debug", "info"):
        level = "warning"
    configure_logging(level, settings.log_format)
    return settings


def _in_transaction(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Migrate, then run `work` in one committed transaction; errors exit with status 1."""
    migrate(settings.async_database_url)

    async def run() -> T:
        engine = create_engine(settings.async_database_url)
        try:
            async with session_scope(create_sessionmaker(engine)) as session:
                return await work(session)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except ImageSyncError as exc:
        err.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(1) from exc


@app.command(cls=_Command)
def serve(
    host: str | None = typer.Option(
        None,
        metavar="HOST",
        help=f"Address to bind (default: IMAGESYNC_HOST, else {_default('host')}).",
    ),
    port: int | None = typer.Option(
        None,
        metavar="PORT",
        help=f"Port to bind (default: IMAGESYNC_PORT, else {_default('port')}).",
    ),
    run_migrations: bool = typer.Option(
        True, "--migrate/--no-migrate", help="Apply pending migrations first."
    ),
    workers: int | None = typer.Option(
        None,
        min=1,
        max=64,
        metavar="N",
        help="API processes on the port (default: IMAGESYNC_WEB_WORKERS, else one per "
        "core). The work runs in a process of its own beside them, so that no request waits "
        "behind a download.",
    ),
) -> None:
    """Serve the API on HOST:PORT, with the sync and rendition workers and the collector
    in a process of their own (unless IMAGESYNC_EMBEDDED_WORKER=false)."""
    from imagesync.serving import serve_processes

    settings = _settings(host=host, port=port, web_workers=workers)
    if run_migrations:
        migrate(settings.async_database_url)
    # The processes read the settings from the environment: give them these.
    os.environ.update(
        {
            "IMAGESYNC_HOST": settings.host,
            "IMAGESYNC_PORT": str(settings.port),
            "IMAGESYNC_WEB_WORKERS": str(settings.api_processes),
        }
    )
    serve_processes(settings)


@app.command(cls=_Command)
def worker(
    concurrency: int | None = typer.Option(
        None,
        metavar="N",
        help="Jobs run at once (default: IMAGESYNC_WORKER_CONCURRENCY, else "
        f"{_default('worker_concurrency')}).",
    ),
    queue: list[str] | None = typer.Option(
        None,
        "--queue",
        metavar="QUEUE",
        help="Take jobs from this queue only (repeat for several): sync, renditions, "
        "maintenance, webhooks (default: all).",
    ),
    name: str = typer.Option("worker", metavar="NAME", help="Worker name in logs."),
) -> None:
    """Run queued work (IMAGESYNC_QUEUE=procrastinate): product syncs, renditions and the
    periodic clean-up. Run any number, on any machine sharing the database and storage.
    SIGTERM drains: no new work, IMAGESYNC_WORKER_SHUTDOWN_GRACE_SECONDS for the rest."""
    from imagesync.queue import QUEUES
    from imagesync.runtime import run_worker

    settings = _settings()
    if settings.queue != "procrastinate":
        err.print(
            "[red]error:[/red] `imagesync worker` runs the work of IMAGESYNC_QUEUE=procrastinate; "
            "with the embedded queue (the default) `imagesync serve` does the work itself"
        )
        raise typer.Exit(2)
    unknown = sorted(set(queue or ()) - set(QUEUES))
    if unknown:
        err.print(
            f"[red]error:[/red] unknown queue(s) {', '.join(unknown)}; known: {', '.join(QUEUES)}"
        )
        raise typer.Exit(2)
    asyncio.run(
        run_worker(
            settings,
            concurrency=concurrency or settings.worker_concurrency,
            queues=list(queue) if queue else None,
            name=name,
        )
    )


@app.command(cls=_Command)
def demo(
    keep: Path | None = typer.Option(
        None,
        "--keep",
        metavar="FOLDER",
        help="Keep the demo's database and files in this folder "
        "(default: a temporary folder, deleted at the end).",
    ),
) -> None:
    """TRAEDE's documented example end to end, on this machine."""
    from imagesync.demo import run_demo

    configure_logging("warning")
    passed = asyncio.run(run_demo(out, keep))
    if keep is not None:
        out.print(f"The demo's database and files are in {keep}")
    if not passed:
        raise typer.Exit(1)


@app.command(cls=_Command)
def push(
    file: str = typer.Argument(
        ..., metavar="FILE", help="A CSV, JSON or JSON Lines export; - reads standard input."
    ),
    url: str = typer.Option(
        ..., envvar="IMAGESYNC_URL", metavar="URL", help="The service, e.g. http://127.0.0.1:8000."
    ),
    token: str = typer.Option(
        ...,
        envvar="IMAGESYNC_TOKEN",
        metavar="TOKEN",
        help="An API token of the account.",
        show_default=False,
    ),
    concurrency: int = typer.Option(
        4, min=1, max=32, metavar="N", help="Syncs of ten products at once (1 to 32)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show what a sync would do; change nothing."
    ),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="Send the valid products of an invalid file."
    ),
    report: Path | None = typer.Option(
        None,
        metavar="FILE",
        help="Write every failed product and image (and a dry run's plan) as JSON here.",
    ),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="Exit 1 on warnings too: an image whose attr: rule matched no variant.",
    ),
    refresh: bool = typer.Option(
        False,
        "--refresh",
        help="Ask the origin of each known image whether its bytes changed, and replace "
        "those that did (?refresh=changed).",
    ),
) -> None:
    """Sync the images of every product in FILE, ten per request, and report the outcome.

    CSV: one row per image with item_number, url, sort, and optionally sort_b2c, alt,
    filename, existance_key, skip_if_no_variant_matches, and attr:NAME columns holding
    the attribute codes an image attaches to (attr:Color = 100). JSON: the API's request
    shape. Exit code 0: all succeeded; 1: something failed, or the service is out of
    reach (or, with --strict, a warning); 2: bad input, or a refused token.
    """
    from imagesync.push import PushOptions, run

    options = PushOptions(
        url=url,
        token=token,
        concurrency=concurrency,
        dry_run=dry_run,
        skip_invalid=skip_invalid,
        report=report,
        strict=strict,
        refresh=refresh,
    )
    raise typer.Exit(run(file, options, out, err))


@app.command(cls=_Command)
def collect(
    grace_days: float | None = typer.Option(
        None,
        metavar="DAYS",
        help="Keep unused files this many days (default: IMAGESYNC_BLOB_GRACE_DAYS, else "
        f"{_default('blob_grace_days'):g}).",
    ),
) -> None:
    """Delete now the files no image has used for the grace period, and stored files no
    row knows (the queue does both on its own: hourly, and daily at 03:37 UTC)."""
    from datetime import timedelta

    from imagesync.runtime import make_queue, open_context
    from imagesync.storage.collector import collect as collect_unused
    from imagesync.storage.collector import sweep

    settings = _settings()
    migrate(settings.async_database_url)
    days = settings.blob_grace_days if grace_days is None else grace_days

    async def run() -> None:
        grace = timedelta(days=days)
        async with open_context(settings, make_queue(settings)) as ctx:
            done = await collect_unused(ctx.blobs, grace=grace)
            orphans = await sweep(ctx.blobs, older_than=grace)
        out.print(
            f"deleted {done.blobs} unused image(s) ({done.files} stored files) "
            f"unused for more than {days:g} days, and {orphans} stored file(s) no row knew"
        )

    asyncio.run(run())


@app.command(cls=_Command)
def queue(
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Show the work: products of sync jobs waiting, running, failing now (their last
    sync failed) or failed in the last 24 h, renditions by state, and the queue's jobs
    per queue (on PostgreSQL also the stalled ones and the live workers)."""
    from imagesync.runtime import uses_procrastinate
    from imagesync.sync.reads.status import queue_status

    settings = _settings()
    procrastinate = uses_procrastinate(settings)
    found = _in_transaction(
        settings,
        lambda s: queue_status(
            s,
            procrastinate=procrastinate,
            stalled_after=timedelta(seconds=settings.stalled_worker_seconds),
        ),
    )
    if as_json:
        typer.echo(json.dumps(found.as_json()))
        return
    table = Table("work", "state", "count", title=f"imagesync queue ({settings.queue})")
    for state in ("queued", "running", "succeeded", "superseded", "failed"):
        table.add_row("products", state, str(found.products.get(state, 0)))
    if found.oldest_queued_seconds is not None:
        table.add_row("products", "oldest queued (s)", f"{found.oldest_queued_seconds:.0f}")
    for code, n in sorted(found.failing_codes.items()):
        table.add_row("products", f"failing now: {code}", str(n))
    for code, n in sorted(found.failed_codes.items()):
        table.add_row("products", f"failed in the last 24 h: {code}", str(n))
    for state, n in sorted(found.renditions.items()):
        table.add_row("renditions", state, str(n))
    for name, statuses in found.jobs.items():
        for state, n in statuses.items():
            table.add_row(f"jobs: {name}", state, str(n))
    if procrastinate:
        table.add_row("jobs", "stalled (worker silent)", str(found.stalled_jobs))
        table.add_row("workers", "live", str(found.workers))
    out.print(table)


@app.command("migrate", cls=_Command)
def migrate_command() -> None:
    """Apply pending database migrations (on PostgreSQL, procrastinate's queue schema too)."""
    settings = _settings(create_database=True)
    before, after = migrate(settings.async_database_url)
    if before == after:
        out.print(f"database is up to date (revision {after}): nothing to apply")
    else:
        out.print(
            f"applied the migrations from {before or 'an empty database'} to revision {after}"
        )


@accounts_app.command("create", cls=_Command)
def accounts_create(
    name: str = typer.Argument(..., metavar="NAME", help="The account's name, unique."),
    as_json: bool = typer.Option(False, "--json", help='Print {"account", "token"} as JSON.'),
) -> None:
    """Create an account and print its first API token (shown once)."""
    settings = _settings(quiet=as_json)
    issued = _in_transaction(settings, lambda s: catalog_auth.create_account(s, name))
    if as_json:
        typer.echo(json.dumps({"account": issued.account, "token": issued.token}))
    else:
        out.print(f"account [bold]{issued.account}[/bold] created; its API token (shown once):")
        typer.echo(issued.token)


@accounts_app.command("list", cls=_Command)
def accounts_list() -> None:
    """List accounts."""
    accounts = _in_transaction(_settings(), repository.list_accounts)
    table = Table("account", "created")
    for account in accounts:
        table.add_row(account.name, account.created_at.isoformat(timespec="seconds"))
    out.print(table)


@tokens_app.command("create", cls=_Command)
def tokens_create(
    account: str = typer.Argument(..., metavar="ACCOUNT"),
    as_json: bool = typer.Option(False, "--json", help='Print {"account", "token"} as JSON.'),
) -> None:
    """Issue another API token for ACCOUNT (shown once)."""
    settings = _settings(quiet=as_json)
    issued = _in_transaction(settings, lambda s: catalog_auth.create_token(s, account))
    if as_json:
        typer.echo(json.dumps({"account": issued.account, "token": issued.token}))
    else:
        typer.echo(issued.token)


@tokens_app.command("list", cls=_Command)
def tokens_list(account: str = typer.Argument(..., metavar="ACCOUNT")) -> None:
    """List ACCOUNT's tokens by prefix (the tokens themselves are not stored)."""

    async def work(session: AsyncSession) -> list[tuple[str, str, str]]:
        found = await catalog_auth.get_account(session, account)
        return [
            (
                t.prefix,
                t.created_at.isoformat(timespec="seconds"),
                t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else "",
            )
            for t in await catalog_auth.list_tokens(session, found)
        ]

    table = Table("prefix", "created", "revoked")
    for row in _in_transaction(_settings(), work):
        table.add_row(*row)
    out.print(table)


@tokens_app.command("revoke", cls=_Command)
def tokens_revoke(
    token_prefix: str = typer.Argument(
        ..., metavar="PREFIX", help="The token, or its first 8 or more characters."
    ),
) -> None:
    """Revoke the token starting with TOKEN_PREFIX (at least 8 characters; the whole token
    will do). The admin sessions opened with it end too."""
    settings = _settings()
    token = _in_transaction(settings, lambda s: catalog_auth.revoke_token(s, token_prefix))
    out.print(
        f"token {token.prefix}… of account {token.account.name} revoked, "
        "and the admin sessions opened with it ended; running API processes refuse it "
        f"within {settings.token_cache_seconds:g} s (IMAGESYNC_TOKEN_CACHE_SECONDS)"
    )


@sessions_app.command("list", cls=_Command)
def sessions_list(account: str = typer.Argument(..., metavar="ACCOUNT")) -> None:
    """List ACCOUNT's signed-in admin sessions."""
    table = Table("opened", "expires", "token")
    for found in _in_transaction(_settings(), lambda s: sessions.list_sessions(s, account)):
        table.add_row(
            found.created_at.isoformat(timespec="seconds"),
            found.expires_at.isoformat(timespec="seconds"),
            f"{found.token_prefix}…",
        )
    out.print(table)


@sessions_app.command("revoke", cls=_Command)
def sessions_revoke(account: str = typer.Argument(..., metavar="ACCOUNT")) -> None:
    """End every admin session of ACCOUNT (its users sign in again)."""
    ended = _in_transaction(_settings(), lambda s: sessions.revoke_sessions(s, account))
    out.print(f"{ended} admin session{'' if ended == 1 else 's'} of {account} ended")
