"""Image sync's own counters, in this process's registry (`kit.metrics.PROCESS`): what
this process downloaded and ended, and the webhook calls it made."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from imagesync.kit.db import on_commit
from imagesync.kit.metrics import PROCESS
from imagesync.sync.results import Entry

DOWNLOADS = Counter(
    "imagesync_downloads",
    "Downloads this process made, by outcome: `fetched`, `not_modified` (a refresh the "
    "origin answered 304), or the error's code (`download_http_error`, `timeout`, "
    "`address_refused` ...).",
    ["outcome"],
    registry=PROCESS,
)
DOWNLOADED_BYTES = Counter(
    "imagesync_downloaded_bytes", "Bytes this process downloaded.", registry=PROCESS
)
PRODUCTS_ENDED = Counter(
    "imagesync_products_ended",
    "Products of sync jobs this process ended, by status (`succeeded`, `failed`, `superseded`).",
    ["status"],
    registry=PROCESS,
)
PRODUCT_FAILURES = Counter(
    "imagesync_product_failures",
    "Products of sync jobs this process ended `failed`, by the error's code.",
    ["code"],
    registry=PROCESS,
)
WEBHOOK_CALLS = Counter(
    "imagesync_webhook_calls",
    "Webhook calls this process made, by outcome: `delivered`, `retrying` (no 2xx; "
    "tried again later), `failed` (no 2xx after the last attempt).",
    ["outcome"],
    registry=PROCESS,
)


def count_ended(session: AsyncSession, entries: Sequence[Entry]) -> None:
    """Count these entries, ended in `session`'s transaction, once it commits."""
    ended = [
        (entry.status, ((entry.result or {}).get("error") or {}).get("code") or "unknown")
        for entry in entries
        if entry.status not in ("queued", "running")
    ]

    def count() -> None:
        for status, code in ended:
            PRODUCTS_ENDED.labels(status).inc()
            if status == "failed":
                PRODUCT_FAILURES.labels(code).inc()

    if ended:
        on_commit(session, count)
