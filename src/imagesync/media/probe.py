"""What an image file really is: format from its magic bytes, dimensions, and proof
that it decodes. Bytes in, facts out; the `Content-Type` header never decides."""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageSequence, UnidentifiedImageError


class MediaError(Exception):
    code = "invalid_image"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class NotAnImage(MediaError):
    code = "not_an_image"


class UnsupportedFormat(MediaError):
    code = "unsupported_format"


class TooManyPixels(MediaError):
    code = "too_many_pixels"


class TooManyFrames(MediaError):
    code = "too_many_frames"


class TooMuchDecoded(MediaError):
    code = "too_much_decoded"


class CorruptImage(MediaError):
    code = "corrupt_image"


@dataclass(frozen=True)
class Format:
    pillow: str
    content_type: str
    extension: str


FORMATS = {
    "jpeg": Format("JPEG", "image/jpeg", "jpg"),
    "png": Format("PNG", "image/png", "png"),
    "gif": Format("GIF", "image/gif", "gif"),
    "webp": Format("WEBP", "image/webp", "webp"),
    "avif": Format("AVIF", "image/avif", "avif"),
}


def sniff(head: bytes) -> str | None:
    """The format named by the file's first bytes, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return "avif"
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"<") and b"<svg" in text.lower():
        return "svg"
    return None


@dataclass(frozen=True)
class ProbedImage:
    format: str
    content_type: str
    extension: str
    width: int  # as displayed: EXIF orientation applied
    height: int
    frames: int = 1
    orientation: int = 1


@dataclass(frozen=True)
class MediaLimits:
    max_pixels: int = 50_000_000  # per frame
    max_frames: int = 100
    # All frames decoded together: a 100-frame animation of 50 MP frames is refused.
    max_total_pixels: int = 200_000_000
    # Decoded bytes (pixels x bytes per pixel x frames): a small file of deep pixels
    # (16-bit RGBA) decodes to far more than its pixel count suggests.
    max_decoded_bytes: int = 512 * 1024 * 1024


@dataclass(frozen=True)
class Header:
    """What an image's header says, before any pixel is decoded."""

    kind: str
    width: int  # as stored
    height: int
    frames: int
    decoded_bytes: int  # of every frame: what decoding it may hold at once, at most

    @property
    def frame_bytes(self) -> int:
        return self.decoded_bytes // self.frames


def read_header(path: Path, *, limits: MediaLimits | None = None) -> Header:
    """Identify the image at `path` from its bytes and judge its size from its header:
    pixels, frames and decoded bytes, all checked before any pixel is decoded, so a
    decompression bomb costs nothing. Raises a `MediaError`."""
    limits = limits or MediaLimits()
    kind, fmt = _format_of(path)
    try:
        if kind == "png":
            check_png_chunks(path)
        with _opened(path, fmt) as image:
            return _judge(image, kind, _source_bytes_per_pixel(path, kind), limits)
    except Exception as exc:
        raise _typed(exc, kind) from exc


def probe(
    path: Path, *, limits: MediaLimits | None = None, header: Header | None = None
) -> ProbedImage:
    """Identify and decode the image at `path`; raise a `MediaError` otherwise. Its
    header is judged first: callers read it (`read_header`), reserve its
    `decoded_bytes` of the process's `DecodeBudget`, and pass it here."""
    header = header or read_header(path, limits=limits)
    fmt = FORMATS[header.kind]
    width, height = header.width, header.height
    try:
        with _opened(path, fmt) as image:
            orientation = image.getexif().get(0x0112, 1)
            orientation = orientation if orientation in range(1, 9) else 1
            # Every frame decoded: truncated or corrupt data fails here. A JPEG is
            # decoded at 1/8 scale (libjpeg's scaled IDCT): every byte of its
            # entropy-coded data is still read and checked, at a fraction of the cost.
            if fmt.pillow == "JPEG":
                image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            for frame in ImageSequence.Iterator(image):
                frame.load()
    except Exception as exc:
        raise _typed(exc, header.kind) from exc
    if orientation in (5, 6, 7, 8):  # rotated a quarter turn
        width, height = height, width
    return ProbedImage(
        header.kind, fmt.content_type, fmt.extension, width, height, header.frames, orientation
    )


def _format_of(path: Path) -> tuple[str, Format]:
    with path.open("rb") as handle:
        head = handle.read(1024)
    kind = sniff(head)
    if kind is None:
        raise NotAnImage("the file is not an image (unknown leading bytes)")
    if kind not in FORMATS:
        raise UnsupportedFormat(f"{kind.upper()} images are not accepted")
    return kind, FORMATS[kind]


@contextmanager
def _opened(path: Path, fmt: Format) -> Iterator[Image.Image]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path, formats=[fmt.pillow]) as image:
            yield image


def _judge(image: Image.Image, kind: str, source_bpp: int, limits: MediaLimits) -> Header:
    width, height = image.size
    if width < 1 or height < 1:
        raise CorruptImage(f"{width}x{height} has no pixels")
    if width * height > limits.max_pixels:
        raise TooManyPixels(f"{width}x{height} is over the limit of {limits.max_pixels} pixels")
    frames = count_frames(image, limits.max_frames)
    if width * height * frames > limits.max_total_pixels:
        raise TooManyPixels(
            f"{frames} frames of {width}x{height} is over the limit of "
            f"{limits.max_total_pixels} pixels in all"
        )
    bpp = max(source_bpp, stored_bytes_per_pixel(image.mode))
    if kind == "jpeg" and image.info.get("progressive"):
        # libjpeg keeps every coefficient of a progressive JPEG (two bytes per
        # component per pixel) until its last scan, whatever the scale it decodes at.
        bpp = max(bpp, 2 * len(image.getbands()))
    decoded = width * height * bpp * frames
    if decoded > limits.max_decoded_bytes:
        raise TooMuchDecoded(
            f"{width}x{height} ({frames} frame{'s' if frames > 1 else ''}, {image.mode}) decodes "
            f"to {mib(decoded)}, over the limit of {mib(limits.max_decoded_bytes)}"
        )
    return Header(kind, width, height, frames, decoded)


def _typed(exc: Exception, kind: str) -> MediaError:
    """Any failure to read an image is the file's fault, as a typed error; never a crash."""
    if isinstance(exc, MediaError):
        return exc
    if isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return TooManyPixels(str(exc))
    if isinstance(exc, UnidentifiedImageError):
        return CorruptImage(f"the {kind.upper()} data cannot be read")
    return CorruptImage(f"the {kind.upper()} data is damaged: {exc}")


def stored_bytes_per_pixel(mode: str) -> int:
    """What Pillow holds per pixel in `mode`: one byte for 1, L and P, two for the
    16-bit greys, four for everything else (RGB is stored as four bytes too)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


# PNG colour types: channels per pixel.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _source_bytes_per_pixel(path: Path, kind: str) -> int:
    if kind != "png":
        return 1
    with path.open("rb") as handle:
        return source_bytes_per_pixel(handle.read(26))


def source_bytes_per_pixel(head: bytes) -> int:
    """The bytes per pixel the file itself stores, where its header says (PNG): a 16-bit
    RGBA PNG is 8 bytes a pixel, whatever Pillow makes of it."""
    if len(head) < 26 or not head.startswith(b"\x89PNG") or head[12:16] != b"IHDR":
        return 1
    depth, colour = head[24], head[25]
    return max(1, (depth * _PNG_CHANNELS.get(colour, 1) + 7) // 8)


def mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.0f} MB"


def count_frames(image: Image.Image, limit: int) -> int:
    """The frame count, or `TooManyFrames` past `limit`, reading no further than the
    frame after it (counting all of a GIF walks every frame's data)."""
    if not getattr(image, "is_animated", False):
        return 1
    try:
        image.seek(limit)  # there is a frame past the limit
    except EOFError:
        frames = int(getattr(image, "n_frames", 1))
    else:
        raise TooManyFrames(f"more than {limit} frames")
    image.seek(0)
    return frames


def check_png_chunks(path: Path) -> None:
    """Verify every PNG chunk's CRC: Pillow does not check image data chunks."""
    with path.open("rb") as handle:
        handle.seek(8)
        while True:
            header = handle.read(8)
            if len(header) < 8:
                raise CorruptImage("the PNG data ends without an IEND chunk")
            length, kind = struct.unpack(">I4s", header)
            if length > 2**31 - 1:
                raise CorruptImage("the PNG has a chunk of impossible length")
            crc = zlib.crc32(kind)
            remaining = length
            while remaining:
                block = handle.read(min(remaining, 1 << 20))
                if not block:
                    raise CorruptImage("the PNG data is truncated")
                crc = zlib.crc32(block, crc)
                remaining -= len(block)
            stored = handle.read(4)
            if len(stored) < 4 or struct.unpack(">I", stored)[0] != crc:
                raise CorruptImage(f"the PNG chunk {kind.decode('latin-1')!r} fails its CRC")
            if kind == b"IEND":
                return
