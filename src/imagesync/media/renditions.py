"""Smaller WebP copies of an original for the web: EXIF orientation applied, metadata
(EXIF with GPS, XMP, comments) left out, never wider than the original. The original
itself is never touched. Pure: bytes in, bytes out; callers run it in a thread.

Settings chosen by measurement (bench/renditions.py, numbers in bench/README.md): one
decode per original (a JPEG decoded straight at the scale of the largest width with
`draft()`), each width resized from the next larger one, WebP at quality 80 and
method 2 (as sharp and about as small as method 4, at two thirds of its time).
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

from PIL import Image, ImageCms

from imagesync.media.probe import (
    CorruptImage,
    MediaError,
    MediaLimits,
    TooManyPixels,
    TooMuchDecoded,
    mib,
    source_bytes_per_pixel,
    stored_bytes_per_pixel,
)

DEFAULT_WIDTHS = (200, 400, 800)
WEBP_QUALITY = 80
WEBP_METHOD = 2
# About how many bytes of full-size pixels `_reduced` copies at a time.
STRIP_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Rendered:
    width: int
    height: int
    data: bytes


def target_widths(original_width: int, widths: tuple[int, ...]) -> list[int]:
    """The configured widths an original of this width gets (never upscaled)."""
    return sorted(w for w in set(widths) if w < original_width)


def decoded_bytes(original: bytes) -> int:
    """What decoding `original`'s first frame for renditions holds at once, from its
    header (0 when it has none: `make_renditions` refuses it then)."""
    try:
        with Image.open(io.BytesIO(original)) as image:
            return _frame_bytes(image, original)
    except Exception:
        return 0


def _frame_bytes(image: Image.Image, original: bytes) -> int:
    bpp = max(source_bytes_per_pixel(original[:26]), stored_bytes_per_pixel(image.mode))
    return image.width * image.height * bpp


def make_renditions(
    original: bytes,
    widths: list[int],
    *,
    limits: MediaLimits | None = None,
    quality: int = WEBP_QUALITY,
    method: int = WEBP_METHOD,
    draft_margin: float = 1.0,
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
                decoded = _frame_bytes(image, original)
                if decoded > limits.max_decoded_bytes:
                    raise TooMuchDecoded(
                        f"{image.width}x{image.height} decodes to {mib(decoded)}, over the limit"
                    )
                base, icc = _decoded(image, max(widths), draft_margin)
        out: dict[int, Rendered] = {}
        source = base  # each width is resized from the next larger one: much cheaper
        for width in sorted(widths, reverse=True):
            if width > base.width:
                continue  # the oriented original is narrower: never upscale
            height = max(1, round(base.height * width / base.width))
            if (width, height) != source.size:
                source = source.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
            buffer = io.BytesIO()
            source.save(buffer, "WEBP", quality=quality, method=method, icc_profile=icc)
            out[width] = Rendered(width, height, buffer.getvalue())
        return out
    except MediaError:
        raise
    except Exception as exc:  # any decoder or encoder failure is typed, never a crash
        raise CorruptImage(f"could not make renditions: {exc}") from exc


def _decoded(image: Image.Image, largest: int, margin: float) -> tuple[Image.Image, bytes | None]:
    """The first frame, decoded (a JPEG at the smallest 1/1..1/8 scale that is still
    at least `margin` times `largest` wide), oriented by its EXIF tag, in RGB or RGBA,
    without any metadata; and the colour profile the renditions carry.

    Colour is not metadata: an RGB original's ICC profile stays with its renditions
    (browsers honour it in WebP), and a CMYK original is converted to sRGB through its
    profile rather than by the naive formula, which shifts every colour.

    JPEG's scaled decoding averages in the frequency domain: decoding straight to the
    target scale measured as sharp as decoding twice as large and resizing down, at
    half the time (bench/renditions.py).

    Other formats decode at full size; the image is then reduced at once by the
    integer factor `resize(reducing_gap=3)` would use for the largest width, before
    anything else copies it, so only one full-size copy of the pixels ever exists."""
    orientation = image.getexif().get(0x0112, 1)
    swapped = orientation in (5, 6, 7, 8)
    oriented_width = image.height if swapped else image.width
    if image.format == "JPEG" and largest < oriented_width:
        scale = largest / oriented_width * margin
        want = (max(1, math.ceil(image.width * scale)), max(1, math.ceil(image.height * scale)))
        image.draft("RGB", want)
    image.load()
    icc = image.info.get("icc_profile") or None
    decoded = _reduced(image, (image.height if swapped else image.width) // (3 * largest))
    if orientation in _TRANSPOSE:
        decoded = decoded.transpose(_TRANSPOSE[orientation])
    if decoded.mode == "CMYK" and icc:
        try:
            decoded = (
                ImageCms.profileToProfile(decoded, io.BytesIO(icc), _SRGB, outputMode="RGB")
                or decoded
            )
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: the plain conversion below
    keep = icc if decoded.mode in ("RGB", "RGBA") and image.mode in ("RGB", "RGBA") else None
    target = "RGBA" if _has_alpha(decoded) else "RGB"
    converted = decoded if decoded.mode == target else decoded.convert(target)
    converted.info = {}  # nothing of the original's metadata travels on
    return converted, keep


def _reduced(image: Image.Image, factor: int) -> Image.Image:
    """`image` made `factor` times smaller (box average), or itself for a factor under
    2. A mode `reduce` cannot take (palette, bilevel, 16-bit grey) is converted first.

    Reduced a strip at a time: `reduce` premultiplies alpha through a copy of what it
    is given, and a full-size copy is what this avoids. Strips are whole blocks of
    `factor` rows, so the result is the same as one `reduce`."""
    if factor < 2:
        return image
    if image.mode not in ("L", "LA", "RGB", "RGBA", "CMYK", "I", "F"):
        image = image.convert("RGBA" if _has_alpha(image) else "RGB")
    width, height = image.size
    out = Image.new(image.mode, (-(-width // factor), -(-height // factor)))
    rows = factor * max(1, STRIP_BYTES // (4 * width * factor))
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(height, top + rows)))
        out.paste(strip.reduce(factor), (0, top // factor))
    return out


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (
        image.mode in ("P", "L", "RGB") and "transparency" in image.info
    )


# What EXIF orientation each transposition undoes (as `ImageOps.exif_transpose`).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SRGB = ImageCms.createProfile("sRGB")
