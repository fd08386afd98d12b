"""Smaller WebP copies of an original for the web: EXIF orientation applied, metadata
(EXIF with GPS, XMP, comments) left out, never wider than the original. The original
itself is never touched. Pure: bytes in, bytes out; callers run it in a thread.

Settings chosen by measurement (bench/renditions.py, numbers in bench/README.md): one
decode per original (JPEG at a reduced scale with `draft()` when the largest width
allows), each width resized from the next larger one, WebP at quality 80 and method 2
(about as small as method 4, nearly as fast as method 0).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

from imagesync.media.probe import CorruptImage, MediaError, MediaLimits, TooManyPixels

DEFAULT_WIDTHS = (200, 400, 800)
WEBP_QUALITY = 80
WEBP_METHOD = 2


@dataclass(frozen=True)
class Rendered:
    width: int
    height: int
    data: bytes


def target_widths(original_width: int, widths: tuple[int, ...]) -> list[int]:
    """The configured widths an original of this width gets (never upscaled)."""
    return sorted(w for w in set(widths) if w < original_width)


def make_renditions(
    original: bytes,
    widths: list[int],
    *,
    limits: MediaLimits | None = None,
    quality: int = WEBP_QUALITY,
    method: int = WEBP_METHOD,
) -> dict[int, Rendered]:
    """WebP renditions of `original` at each of `widths` (already filtered by
    `target_widths` against the *oriented* width). Raises `MediaError`."""
    limits = limits or MediaLimits()
    if not widths:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(original)) as image:
                if image.width * image.height > limits.max_pixels:
                    raise TooManyPixels(f"{image.width}x{image.height} is over the limit")
                base = _decoded(image, max(widths))
        out: dict[int, Rendered] = {}
        source = base  # each width is resized from the next larger one: much cheaper
        for width in sorted(widths, reverse=True):
            if width >= base.width:
                continue  # the oriented original is narrower: never upscale
            height = max(1, round(base.height * width / base.width))
            source = source.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
            buffer = io.BytesIO()
            source.save(buffer, "WEBP", quality=quality, method=method)
            out[width] = Rendered(width, height, buffer.getvalue())
        return out
    except MediaError:
        raise
    except Exception as exc:  # any decoder or encoder failure is typed, never a crash
        raise CorruptImage(f"could not make renditions: {exc}") from exc


def _decoded(image: Image.Image, largest: int) -> Image.Image:
    """The first frame, decoded (at a reduced JPEG scale when that is enough for
    `largest`), oriented by its EXIF tag, in RGB or RGBA, without any metadata."""
    orientation = image.getexif().get(0x0112, 1)
    swapped = orientation in (5, 6, 7, 8)
    oriented_width = image.height if swapped else image.width
    if image.format == "JPEG" and largest < oriented_width:
        scale = largest / oriented_width
        # draft() picks the smallest 1/1..1/8 scale at least this large; keep 2x margin
        # so the final resize still has pixels to average.
        want = (max(1, int(image.width * scale * 2)), max(1, int(image.height * scale * 2)))
        image.draft("RGB", want)
    image.load()
    oriented = ImageOps.exif_transpose(image) or image
    has_alpha = oriented.mode in ("RGBA", "LA", "PA") or (
        oriented.mode == "P" and "transparency" in oriented.info
    )
    converted = oriented.convert("RGBA" if has_alpha else "RGB")
    converted.info = {}  # nothing of the original's metadata travels on
    return converted
