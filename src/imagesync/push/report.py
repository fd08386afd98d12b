"""What `push` shows: live progress while sending, then a summary and a JSON report."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from imagesync.push.send import Tally, error_codes, warnings_of
from imagesync.push.source import Problem

PLAIN_EVERY = 5.0  # seconds between progress lines without a terminal


class Display:
    """A rich progress bar on a terminal; plain periodic lines otherwise."""

    def __init__(self, console: Console, tally: Tally, *, verb: str) -> None:
        self.console = console
        self.tally = tally
        self.verb = verb
        self._progress: Progress | None = None
        self._task: Any = None
        self._last_line = time.monotonic()

    def _fields(self) -> dict[str, Any]:
        t = self.tally
        return {
            "images": f"{t.images_done}/{t.images} images",
            "downloads": f"{t.downloads} downloads",
            "failed": f"{t.failed} failed",
            "rate": f"{t.rate:.1f} images/s",
        }

    @contextmanager
    def live(self) -> Iterator[None]:
        if not self.console.is_terminal:
            yield
            self.line(final=True)
            return
        self._progress = Progress(
            TextColumn(f"{self.verb}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("products · {task.fields[images]} · {task.fields[downloads]}"),
            TextColumn("· [red]{task.fields[failed]}[/red] · {task.fields[rate]}"),
            TimeElapsedColumn(),
            console=self.console,
        )
        with self._progress:
            self._task = self._progress.add_task(
                self.verb, total=self.tally.products, **self._fields()
            )
            yield
            self.update()

    def update(self) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task,
                total=self.tally.products,
                completed=self.tally.products_done,
                **self._fields(),
            )
        else:
            self.line()

    def line(self, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last_line < PLAIN_EVERY:
            return
        self._last_line = now
        t = self.tally
        fields = self._fields()
        self.console.print(
            f"{self.verb}: {t.products_done}/{t.products} products, {fields['images']}, "
            f"{fields['downloads']}, {fields['failed']}, {fields['rate']}",
            highlight=False,
            soft_wrap=True,
        )


def summary(console: Console, tally: Tally, *, dry_run: bool) -> None:
    """Products by status, images by outcome (or planned action) and the top error codes."""
    if dry_run:
        _plan_summary(console, tally)
    else:
        statuses = Counter(r.status for r in tally.results)
        outcomes = Counter(i.outcome for r in tally.results for i in r.images)
        table = Table(title="Products by status")
        table.add_column("status")
        table.add_column("products", justify="right")
        for status, count in statuses.most_common():
            table.add_row(status, str(count))
        console.print(table)
        table = Table(title="Images by outcome")
        table.add_column("outcome")
        table.add_column("images", justify="right")
        for outcome, count in outcomes.most_common():
            table.add_row(outcome, str(count))
        table.add_row("deleted", str(sum(r.counts.deleted for r in tally.results)))
        table.add_row("downloaded", str(tally.downloads))
        for name in ("refreshed", "unchanged"):  # what --refresh found, when it was asked
            if total := sum(getattr(r.counts, name) for r in tally.results):
                table.add_row(name, str(total))
        console.print(table)
    codes = error_codes(tally)
    if codes:
        table = Table(title="Top error codes")
        table.add_column("code")
        table.add_column("count", justify="right")
        for code, count in codes.most_common(10):
            table.add_row(code, str(count))
        console.print(table)
    warnings = warnings_of(tally)
    if warnings:
        images = f"{len(warnings)} image{'' if len(warnings) == 1 else 's'}"
        table = Table(title=f"Warnings: {images} whose rule matched no variant")
        table.add_column("product", no_wrap=True)
        table.add_column("url", overflow="fold")
        table.add_column("code", no_wrap=True)
        table.add_column("detail", overflow="fold")
        for warning in warnings[:20]:
            table.add_row(*(warning[k] for k in ("item_number", "url", "code", "detail")))
        console.print(table)
        more = f" ({len(warnings) - 20} more in the report)" if len(warnings) > 20 else ""
        console.print(
            f"{images} attached to their product only{more}: check the attr: columns' "
            "names and codes. --strict makes this exit 1.",
            highlight=False,
            soft_wrap=True,
        )


def _plan_summary(console: Console, tally: Tally) -> None:
    table = Table(title="Dry run: what a sync would do (nothing was changed)")
    keys = ["create", "keep", "update", "delete", "skip", "download"]
    if any(plan.counts.refresh for plan in tally.plans):  # --refresh: origins to be asked
        keys.append("refresh")
    for name in ["product", *keys]:
        table.add_column(name, justify="left" if name == "product" else "right")
    totals: Counter[str] = Counter()
    for plan in tally.plans:
        if plan.status != "planned":
            table.add_row(plan.item_number, f"[red]{plan.error.code if plan.error else 'failed'}")
            continue
        counts = plan.counts.model_dump()
        totals.update(counts)
        table.add_row(plan.item_number, *(str(counts[k]) for k in keys))
    table.add_section()
    table.add_row("[bold]total", *(f"[bold]{totals[k]}" for k in keys))
    console.print(table)


def write_report(
    path: Path, tally: Tally, problems: list[Problem], *, dry_run: bool, interrupted: bool
) -> None:
    """Every failed product and image with its code and detail (and, for a dry run, every
    product's plan), plus the file's problems."""
    failed = []
    for result in tally.results:
        if result.status == "succeeded":
            continue
        failed.append(
            {
                "item_number": result.item_number,
                "status": result.status,
                "error": result.error.model_dump() if result.error else None,
                "images": [
                    {"url": i.url, "existance_key": i.existance_key, **i.error.model_dump()}
                    for i in result.images
                    if i.error is not None
                ],
            }
        )
    report: dict[str, Any] = {
        "dry_run": dry_run,
        "interrupted": interrupted,
        "products": tally.products,
        "products_done": tally.products_done,
        "images": tally.images,
        "downloads": tally.downloads,
        "statuses": dict(Counter(r.status for r in tally.results)),
        "error_codes": dict(error_codes(tally).most_common()),
        "warnings": warnings_of(tally),
        "invalid_in_file": [
            {"line": p.line, "column": p.column, "item_number": p.item_number, "detail": p.detail}
            for p in problems
        ],
        "failed": failed,
    }
    if dry_run:
        report["plans"] = [plan.model_dump(mode="json") for plan in tally.plans]
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
