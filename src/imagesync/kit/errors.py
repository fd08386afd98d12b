"""The error hierarchy, in TRAEDE's error shape:

    {"errors": [{"status": 422, "code": "validation_error", "title": "...",
                 "detail": "...", "source": {"pointer": "/products/0/sku"}}]}

Raise an `ImageSyncError` (or a subclass) anywhere below a route; `kit.handlers` turns
it into that shape. Validation of a request reports every problem at once. No web
framework here: `imagesync.client` reads the same error objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import BaseModel

log = structlog.get_logger(__name__)


class ErrorSource(BaseModel):
    pointer: str | None = None
    parameter: str | None = None
    header: str | None = None


class ErrorObject(BaseModel):
    status: int
    code: str
    title: str
    detail: str
    source: ErrorSource | None = None


class ErrorResponse(BaseModel):
    errors: list[ErrorObject]


@dataclass(frozen=True)
class Problem:
    """One problem with a request; `pointer` is a JSON pointer into the body."""

    detail: str
    pointer: str | None = None
    parameter: str | None = None
    code: str | None = None
    title: str | None = None
    header: str | None = None


class ImageSyncError(Exception):
    """Base of every error the API renders. Subclasses fix status, code and title."""

    status: int = 500
    code: str = "internal_error"
    title: str = "Internal server error"

    def __init__(self, detail: str | None = None, *, problems: Sequence[Problem] = ()) -> None:
        self.detail = detail or self.title
        self.problems = tuple(problems)
        super().__init__(self.detail)

    def to_objects(self) -> list[ErrorObject]:
        if not self.problems:
            return [
                ErrorObject(
                    status=self.status, code=self.code, title=self.title, detail=self.detail
                )
            ]
        return [
            ErrorObject(
                status=self.status,
                code=problem.code or self.code,
                title=problem.title or self.title,
                detail=problem.detail,
                source=_source(problem),
            )
            for problem in self.problems
        ]


class ValidationFailed(ImageSyncError):
    status = 422
    code = "validation_error"
    title = "Invalid request"


class Unauthorized(ImageSyncError):
    status = 401
    code = "unauthorized"
    title = "Authentication required"


class NotFound(ImageSyncError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(ImageSyncError):
    status = 409
    code = "conflict"
    title = "Conflict"


class InvalidJson(ImageSyncError):
    status = 400
    code = "invalid_json"
    title = "Malformed JSON"


class UnsupportedMediaType(ImageSyncError):
    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


class Unavailable(ImageSyncError):
    """The service cannot answer now (its database went away): send the request again
    after `Retry-After`. Nothing of it was recorded."""

    status = 503
    code = "unavailable"
    title = "Service unavailable"


class PayloadTooLarge(ImageSyncError):
    status = 413
    code = "payload_too_large"
    title = "Request body too large"


def duplicate_problems(keyed: Iterable[tuple[str, str]]) -> list[Problem]:
    """Problems for every repeated key; `keyed` gives (key, pointer) pairs in order."""
    seen: set[str] = set()
    problems = []
    for key, pointer in keyed:
        if key in seen:
            problems.append(
                Problem(
                    detail=f"{key!r} appears more than once in this request",
                    pointer=pointer,
                    code="duplicate",
                    title="Duplicate key",
                )
            )
        seen.add(key)
    return problems


def json_pointer(parts: Iterable[str | int]) -> str:
    """RFC 6901 pointer from path parts: ("products", 0, "sku") -> "/products/0/sku"."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


def _source(problem: Problem) -> ErrorSource | None:
    if problem.pointer is None and problem.parameter is None and problem.header is None:
        return None
    return ErrorSource(pointer=problem.pointer, parameter=problem.parameter, header=problem.header)


_PYDANTIC_TITLES = {
    "missing": "Required field missing",
    "extra_forbidden": "Unknown field",
    "json_invalid": "Malformed JSON",
}


def problems_from_validation(errors: Sequence[Any]) -> list[Problem]:
    """Translate FastAPI/pydantic validation errors into problems with pointers."""
    problems: list[Problem] = []
    for error in errors:
        loc = list(error.get("loc", ()))
        kind = error.get("type", "")
        where, path = (loc[0], loc[1:]) if loc else ("body", [])
        # Pydantic names union branches and tagged models in the location; drop them.
        path = [
            p for p in path if isinstance(p, int) or not str(p).startswith(("function-", "tagged-"))
        ]
        title = _PYDANTIC_TITLES.get(kind, "Invalid value")
        if kind == "json_invalid":
            detail = (
                f"The body is not valid JSON: {error.get('ctx', {}).get('error', 'parse error')}"
            )
            problems.append(Problem(detail=detail, pointer="", title=title))
        elif kind == "extra_forbidden":
            problems.append(
                Problem(
                    detail=f"Unknown field {path[-1]!r}; check its spelling",
                    pointer=json_pointer(path),
                    title=title,
                )
            )
        elif where == "body":
            problems.append(
                Problem(detail=str(error.get("msg")), pointer=json_pointer(path), title=title)
            )
        elif where == "header":
            name = str(path[0]) if path else ""
            problems.append(Problem(detail=str(error.get("msg")), header=name, title=title))
        else:
            name = str(path[0]) if path else str(where)
            problems.append(Problem(detail=str(error.get("msg")), parameter=name, title=title))
    return problems
