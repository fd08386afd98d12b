"""The names images are served under."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from imagesync.sync.models import Image
from imagesync.sync.planner import ImageSpec

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
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
    name = _UNSAFE.sub("-", raw)
    if PurePosixPath(name).suffix.lower() in _IMAGE_SUFFIXES:
        name = PurePosixPath(name).stem
    name = name.strip(".-")[:150].rstrip(".-") or "image"
    return f"{name}.{_EXTENSIONS.get(content_type, 'bin')}"


def rendition_filename(image: Image) -> str:
    return f"{PurePosixPath(image.filename).stem}.webp"
