"""The one renderer of errors for the web app: every `ImageSyncError`, FastAPI's
validation errors, Starlette's HTTP errors and anything unexpected become TRAEDE's error
shape (`kit.errors`)."""

from __future__ import annotations

from http import HTTPStatus

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from imagesync.kit.errors import (
    ErrorResponse,
    ImageSyncError,
    Unauthorized,
    Unavailable,
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


# Seconds a client waits before sending a request again that met a lost database.
RETRY_AFTER_SECONDS = 2


async def _on_database_error(request: Request, exc: Exception) -> JSONResponse:
    """The database went away mid-request (a connection cut, a failover, SQLite busy for
    too long): the transaction was rolled back, so the client may simply send it again.
    Any other database error is the server's fault: a 500."""
    assert isinstance(exc, DBAPIError)
    if not (exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)):
        return await _on_unexpected(request, exc)
    log.warning(
        "http.database_unavailable", path=request.url.path, error=str(exc.orig or exc)[:300]
    )
    return error_response(
        Unavailable("The database cannot be reached right now; send the request again."),
        {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("http.unhandled_error", path=request.url.path, method=request.method, exc_info=exc)
    return error_response(ImageSyncError("The server failed; the error is logged."))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ImageSyncError, _on_imagesync_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(DBAPIError, _on_database_error)
    app.add_exception_handler(Exception, _on_unexpected)
