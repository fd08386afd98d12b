"""`imagesync push FILE`: an export (CSV, JSON or JSON Lines) turned into image syncs.

The file is read and validated first; nothing is sent when it is invalid (unless
`skip_invalid`). Then ten products per sync, a few at once, each job waited for, with
live progress, a summary and an optional JSON report. Exit codes: 0 all succeeded, 1
something failed (or was interrupted), 2 bad input or usage.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from imagesync.client import ApiError, AsyncClient, ConnectionFailed, Unauthorized
from imagesync.push.report import Display, summary, write_report
from imagesync.push.send import Tally, push, warnings_of
from imagesync.push.source import Loaded, SourceError, load

OK, FAILED, BAD_INPUT = 0, 1, 2
INTERRUPTED = 130


@dataclass(frozen=True)
class PushOptions:
    url: str
    token: str
    concurrency: int = 4
    dry_run: bool = False
    skip_invalid: bool = False
    report: Path | None = None
    retries: int = 5
    strict: bool = False  # warnings (rules that matched no variant) make the exit code 1
    refresh: bool = False  # ask the origins of known images whether their bytes changed


def run(path: str, options: PushOptions, console: Console, errors: Console) -> int:
    """Push the file; the exit code."""
    try:
        loaded = load(path)
    except SourceError as exc:
        errors.print(f"{path}: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        return BAD_INPUT
    if loaded.problems:
        _print_problems(errors, path, loaded)
        if not options.skip_invalid:
            errors.print(
                f"Nothing was sent: {len(loaded.invalid)} of "
                f"{len(loaded.invalid) + len(loaded.products)} products are invalid. Fix them, "
                "or send the valid ones with --skip-invalid.",
                highlight=False,
                soft_wrap=True,
            )
            return BAD_INPUT
    console.print(
        f"{path}: {len(loaded.products)} products, {loaded.images} images"
        + (f"; {len(loaded.invalid)} invalid products left out" if loaded.invalid else ""),
        highlight=False,
        soft_wrap=True,
    )
    refused = asyncio.run(_check_token(options, errors))
    if refused is not None:
        return refused
    tally = Tally(products=len(loaded.products), images=loaded.images)
    display = Display(console, tally, verb="planning" if options.dry_run else "syncing")
    interrupted = False
    try:
        with display.live():
            asyncio.run(_push(loaded, options, tally, display))
    except KeyboardInterrupt:
        interrupted = True
    summary(console, tally, dry_run=options.dry_run)
    if options.report is not None:
        write_report(
            options.report, tally, loaded.problems, dry_run=options.dry_run, interrupted=interrupted
        )
        console.print(f"Report written to {options.report}", highlight=False, soft_wrap=True)
    if interrupted:
        errors.print(
            f"Interrupted after {tally.products_done} of {tally.products} products. Syncs are "
            "idempotent: run the same command again to finish.",
            highlight=False,
            soft_wrap=True,
        )
        return INTERRUPTED
    if tally.failed or loaded.invalid:
        return FAILED
    return FAILED if options.strict and warnings_of(tally) else OK


async def _check_token(options: PushOptions, errors: Console) -> int | None:
    """Before anything is sent: is the service there, and does it take the token? The
    exit code when not (2 for a refused token: a usage error), None when it does."""

    def say(text: str) -> None:
        errors.print(text, style="red", highlight=False, markup=False, soft_wrap=True)

    # Retried here, not in the client, so that each failed try is said as it happens.
    async with AsyncClient(options.url, options.token, retries=0) as client:
        for attempt in range(options.retries + 1):
            try:
                await client.products(limit=1)
                return None
            except Unauthorized:
                say(
                    f"{options.url} refused the token ({options.token[:8]}...): check --token "
                    "or IMAGESYNC_TOKEN. Nothing was sent."
                )
                return BAD_INPUT
            except ConnectionFailed as exc:
                if attempt == options.retries:
                    say(f"cannot reach {options.url}: {exc.reason}. Nothing was sent.")
                    return FAILED
                wait = client.backoff(attempt, None)
                say(f"cannot reach {options.url}: {exc.reason}; trying again in {wait:.1f} s")
                await asyncio.sleep(wait)
            except ApiError:
                return None  # a reachable service with a token it did not refuse
    return None


async def _push(loaded: Loaded, options: PushOptions, tally: Tally, display: Display) -> None:
    async with AsyncClient(options.url, options.token, retries=options.retries) as client:
        await push(
            client,
            loaded.products,
            tally,
            concurrency=options.concurrency,
            dry_run=options.dry_run,
            refresh=options.refresh,
            on_change=display.update,
        )


def _print_problems(errors: Console, path: str, loaded: Loaded, limit: int = 50) -> None:
    for problem in loaded.problems[:limit]:
        errors.print(f"{path}: {problem}", highlight=False, markup=False, soft_wrap=True)
    if len(loaded.problems) > limit:
        errors.print(
            f"... and {len(loaded.problems) - limit} more problems", highlight=False, soft_wrap=True
        )
