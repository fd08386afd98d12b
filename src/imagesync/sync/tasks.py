"""Image sync's task: running one product of a sync job. The queue owns its retries
(see `run.product.run_product`)."""

from __future__ import annotations

from imagesync.queue import SYNC, Attempt, Tasks
from imagesync.sync.intake.submit import RUN_PRODUCT
from imagesync.sync.run import product
from imagesync.sync.run.context import SyncContext


async def run_product(attempt: Attempt, seq: int) -> None:
    """Download what one product of a sync job needs, then apply it."""
    ctx: SyncContext = attempt.resources["sync"]
    await product.run_product(ctx, seq, attempt)


def register(tasks: Tasks) -> None:
    tasks.task(RUN_PRODUCT, queue=SYNC)(run_product)
