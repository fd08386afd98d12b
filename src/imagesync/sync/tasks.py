"""Image sync's task: running one product of a sync job. The queue owns its retries
(see `run.run_product`)."""

from __future__ import annotations

from imagesync.queue import SYNC, Attempt, Tasks
from imagesync.sync import run
from imagesync.sync.context import SyncContext
from imagesync.sync.submit import RUN_PRODUCT


async def run_product(attempt: Attempt, seq: int) -> None:
    """Download what one product of a sync job needs, then apply it."""
    ctx: SyncContext = attempt.resources["sync"]
    await run.run_product(ctx, seq, attempt)


def register(tasks: Tasks) -> None:
    tasks.task(RUN_PRODUCT, queue=SYNC)(run_product)
