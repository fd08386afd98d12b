"""The catalog's announcements reach each listener once."""

from __future__ import annotations

from imagesync.catalog import events
from imagesync.sync.reads.images import CatalogImages


def test_registering_image_sync_again_adds_no_second_listener() -> None:
    events.listen(CatalogImages())
    before = list(events._listeners)
    events.listen(CatalogImages())  # another process start in the same interpreter
    assert events._listeners == before
    assert sum(isinstance(x, CatalogImages) for x in events._listeners) == 1
