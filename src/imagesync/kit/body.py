"""JSON request bodies, read one way for every route that takes one (`kit.routes`): the
content type must be JSON (415 otherwise), the bytes UTF-8 and the text JSON (400
`invalid_json`, saying where), and a body over the size limit is 413 however it was sent
(the size middleware stops reading it). Only then does FastAPI validate it (422)."""

from __future__ import annotations

import email.message
import json
from typing import Any

from imagesync.kit.errors import ErrorResponse, InvalidJson

_BOM = b"\xef\xbb\xbf"
# Arrays and objects in arrays and objects: no request of the API nests deeper than 5
# (products, a product, its images, an image, its rule); 32 leaves room for any.
MAX_DEPTH = 32


def is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def where(data: bytes, position: int) -> str:
    """`line L, column C` of a byte offset (both from 1; the column counts characters)."""
    before = data[:position]
    line_start = before.rfind(b"\n") + 1
    column = len(before[line_start:].decode("utf-8", errors="replace")) + 1
    line = before.count(b"\n") + 1
    return f"line {line}, column {column}"


def parse_json(data: bytes) -> Any:
    """The JSON value of a request body, or `InvalidJson` saying what and where."""
    if data.startswith(_BOM):  # tolerated, as RFC 8259 allows
        data = data[len(_BOM) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        raise InvalidJson(
            f"The body is not UTF-8 text: byte 0x{bad} at {where(data, exc.start)}"
        ) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidJson(
            f"The body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except RecursionError:  # deeper than the parser can go
        raise InvalidJson(_too_deep()) from None
    if _depth_over(value, MAX_DEPTH):
        raise InvalidJson(_too_deep())
    return value


def _too_deep() -> str:
    return f"The body is nested more than {MAX_DEPTH} levels deep"


def _depth_over(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest deeper than `limit` in `value` (no recursion)."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        children = []
        for container in level:
            items = container.values() if isinstance(container, dict) else container
            children += [item for item in items if isinstance(item, dict | list)]
        level = children
    return False


BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body is not UTF-8 JSON (`invalid_json`)"},
    413: {"model": ErrorResponse, "description": "The body is over the size limit"},
    415: {"model": ErrorResponse, "description": "The body is not sent as application/json"},
}
