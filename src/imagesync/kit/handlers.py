"""The one renderer of errors for the web app: every `ImageSyncError`, FastAPI's
validation errors, Starlette's HTTP errors and anything unexpected become TRAEDE's error
shape (`kit.errors`)."""

from __future__ import annotations

from http import HTTPStatus

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from imagesync.kit.errors import (
    ErrorResponse,
    ImageSyncError,
    Unauthorized,
    ValidationFailed,
    problems_from_validation,
)

log = structlog.get_logger(__name__)


def error_response(exc: ImageSyncError, headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse(errors=exc.to_objects())
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True), status_code=exc.status, headers=headers
    )


async def _on_imagesync_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ImageSyncError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return error_response(exc, headers)


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(ValidationFailed(problems=problems_from_validation(exc.errors())))


class _HTTPError(ImageSyncError):
    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        phrase = HTTPStatus(status).phrase
        self.title = phrase
        self.code = phrase.lower().replace(" ", "_").replace("-", "_")
        super().__init__(detail)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"No route {request.url.path}"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    response = error_response(_HTTPError(exc.status_code, detail))
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("http.unhandled_error", path=request.url.path, method=request.method, exc_info=exc)
    return error_response(ImageSyncError("The server failed; the error is logged."))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ImageSyncError, _on_imagesync_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
