"""The names images are served under."""

from __future__ import annotations

import unicodedata
from pathlib import PurePosixPath
from urllib.parse import quote, unquote, urlsplit

from anyascii import anyascii

from imagesync.sync.core.planner import ImageSpec

# Letters, marks and digits of any script are kept; so are these. Everything else (path
# separators, quotes, spaces, controls, bidi overrides, symbols) becomes one hyphen.
_KEPT_PUNCTUATION = frozenset("._-")
_KEPT_CATEGORIES = frozenset("LMN")
_MAX_STEM = 150
_EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/avif": "avif",
}
_IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".png",
    ".gif",
    ".webp",
    ".avif",
    ".jfif",
    ".bmp",
    ".tif",
    ".tiff",
    ".heic",
    ".svg",
}


def effective_filename(spec: ImageSpec, content_type: str) -> str:
    """The custom filename, else the URL's last path segment; sanitised, with an extension
    that matches the real format."""
    raw = spec.filename or unquote(PurePosixPath(urlsplit(spec.url).path).name)
    name = _safe(unicodedata.normalize("NFC", raw))
    if PurePosixPath(name).suffix.lower() in _IMAGE_SUFFIXES:
        name = PurePosixPath(name).stem
    name = name.strip(".-")[:_MAX_STEM].rstrip(".-") or "image"
    return f"{name}.{_EXTENSIONS.get(content_type, 'bin')}"


def _safe(text: str) -> str:
    """Runs of characters that are unsafe in a path segment or a header become one hyphen."""
    kept: list[str] = []
    for char in text:
        if char in _KEPT_PUNCTUATION or unicodedata.category(char)[0] in _KEPT_CATEGORIES:
            kept.append(char)
        elif not kept or kept[-1] != "-":
            kept.append("-")
    return "".join(kept)


def content_disposition(filename: str) -> str:
    """`inline` with an ASCII fallback name and, for any other name, the exact one in
    RFC 5987's encoding (RFC 6266, section 4.3): every browser picks the exact one."""
    if filename.isascii():
        return f'inline; filename="{filename}"'
    stem, suffix = PurePosixPath(filename).stem, PurePosixPath(filename).suffix
    fallback = _safe(anyascii(stem)).strip(".-") or "image"
    return f"inline; filename=\"{fallback}{suffix}\"; filename*=UTF-8''{quote(filename, safe='')}"


def url_segment(filename: str) -> str:
    """The name as one percent-encoded path segment of a file URL."""
    return quote(filename, safe="")


def rendition_filename(filename: str) -> str:
    """The WebP rendition's name of an image named `filename`."""
    return f"{PurePosixPath(filename).stem}.webp"
