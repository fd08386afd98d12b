"""What an image file really is: format from its magic bytes, dimensions, and proof
that it decodes. Bytes in, facts out; the `Content-Type` header never decides."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError


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
    if head.lstrip().startswith((b"<svg", b"<?xml")):
        return "svg"
    return None


@dataclass(frozen=True)
class ProbedImage:
    format: str
    content_type: str
    extension: str
    width: int
    height: int


def probe(path: Path, *, max_pixels: int = 50_000_000) -> ProbedImage:
    """Identify and fully decode the image at `path`; raise a `MediaError` otherwise."""
    with path.open("rb") as handle:
        head = handle.read(32)
    kind = sniff(head)
    if kind is None:
        raise NotAnImage("the file is not an image (unknown leading bytes)")
    if kind not in FORMATS:
        raise UnsupportedFormat(f"{kind.upper()} images are not accepted")
    fmt = FORMATS[kind]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=[fmt.pillow]) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise TooManyPixels(f"{width}x{height} is over {max_pixels} pixels")
                image.load()  # a full decode: truncated or corrupt data fails here
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooManyPixels(str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise CorruptImage(f"the {kind.upper()} data cannot be read") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CorruptImage(f"the {kind.upper()} data is damaged: {exc}") from exc
    return ProbedImage(kind, fmt.content_type, fmt.extension, width, height)
