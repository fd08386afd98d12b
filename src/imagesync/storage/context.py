"""What the blob lifecycle needs, built once per process, and who uses blobs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from imagesync.media.budget import DecodeBudget
from imagesync.media.probe import MediaLimits
from imagesync.media.renditions import DEFAULT_WIDTHS
from imagesync.queue import Queue
from imagesync.storage.staging import Staging, default_parent
from imagesync.storage.store import BlobStore


@dataclass(frozen=True)
class BlobUsers:
    """The rows that point at blobs, as the domains that own them declare: a row of a
    `holders` column keeps its blob alive (an image); a row of a `dependents` column
    only remembers it and is deleted with it (a "seen before" source). `held_if` are
    further conditions, each given the blob's id column, under which a blob is in use
    (the source of an image keeps its blob alive)."""

    holders: tuple[InstrumentedAttribute[int], ...] = ()
    dependents: tuple[InstrumentedAttribute[int], ...] = ()
    held_if: tuple[Callable[[InstrumentedAttribute[int]], ColumnElement[bool]], ...] = ()


@dataclass
class Blobs:
    """Storing blobs, making their renditions and collecting the unused ones."""

    sessionmaker: async_sessionmaker[AsyncSession]
    store: BlobStore
    queue: Queue
    users: BlobUsers
    media: MediaLimits = field(default_factory=MediaLimits)
    # Shared by the probe of every download and every rendition of this process.
    decode_budget: DecodeBudget = field(
        default_factory=lambda: DecodeBudget(MediaLimits().max_decoded_bytes)
    )
    rendition_widths: tuple[int, ...] = DEFAULT_WIDTHS
    # Downloads in flight, and those kept while the store refuses them.
    staging: Staging = field(default_factory=lambda: Staging(default_parent()))
