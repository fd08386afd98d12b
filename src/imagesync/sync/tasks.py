"""Queue entry points of image sync, for `imagesync worker` (procrastinate). The embedded
runner in `serve` calls the same function.

Retries: a product's runs are counted on its job entry (`run.record_crash` ends it
`failed` after `IMAGESYNC_TASK_MAX_ATTEMPTS`), and the task does not raise on its final
attempt, so nothing is retried forever.
"""

from __future__ import annotations

import procrastinate
from procrastinate import JobContext

from imagesync.queue import SYNC
from imagesync.queue.procrastinate import Backoff
from imagesync.sync import run
from imagesync.sync.context import SyncContext
from imagesync.sync.submit import RUN_PRODUCT


async def run_product(context: JobContext, seq: int) -> None:
    """Download what one product of a sync job needs, then apply it."""
    ctx: SyncContext = context.additional_context["sync"]
    await run.run_queued(ctx, seq)


def register(app: procrastinate.App) -> None:
    app.task(
        name=RUN_PRODUCT, queue=SYNC, pass_context=True, retry=Backoff(soon=(run.ProductBusy,))
    )(run_product)
