"""The route class of every API route: a request is judged whole before the endpoint runs.

- A JSON body is read by `kit.body` (415, 400 `invalid_json`, 413) and documented so.
- A query parameter the route does not take is a 422 naming it, like an unknown body
  field: `?wiat=30` is a typo a client should hear about, not a wait that never happens.
- A route that takes a bearer token refuses a request without one (401) before reading
  its body.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import pydantic
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.requests import Request
from starlette.responses import Response

from imagesync.kit.body import BODY_ERRORS, is_json, parse_json
from imagesync.kit.errors import Problem, Unauthorized, UnsupportedMediaType, ValidationFailed
from imagesync.kit.schemas import RequestModel


class StrictRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if self.body_field is not None:
            self.responses = {**BODY_ERRORS, **self.responses}
        self.query_names = _query_names(self.dependant)
        self.needs_token = _takes_bearer(self.dependant)
        self.body_model = _body_model(self)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def judge_then_handle(request: Request) -> Response:
            unknown = [name for name in request.query_params if name not in self.query_names]
            if unknown:
                raise ValidationFailed(problems=[_unknown_parameter(name) for name in unknown])
            if takes_body and self.needs_token:
                # Before the body is read: a caller without a token makes the server parse
                # nothing. (The token itself is checked by the route's dependency.)
                scheme, _, token = request.headers.get("authorization", "").partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    raise Unauthorized("Send an API token: Authorization: Bearer <token>")
            if takes_body:
                content_type = request.headers.get("content-type")
                if not is_json(content_type):
                    got = f"{content_type!r}" if content_type else "no Content-Type"
                    raise UnsupportedMediaType(
                        f"Send the body as JSON with Content-Type: application/json (got {got})"
                    )
                # Starlette keeps what it parsed: FastAPI's own `request.json()` returns it.
                request._json = self.read_body(await request.body())
            return await handler(request)

        return judge_then_handle

    def read_body(self, data: bytes) -> Any:
        """The body as FastAPI is to validate it. A body model is read straight from the
        bytes, one pass in pydantic's parser, and FastAPI takes the instance as it is;
        only a body it refuses is parsed as JSON (`InvalidJson`, with where) and left to
        FastAPI's own validation, so every error reads as before. (A model's nesting
        bounds the body's: no body model takes arbitrary JSON, see `_body_model`.)

        The body is read strictly: each value must be of the JSON type the documented
        schema gives it. pydantic's lax mode would take `0` or `"no"` for a boolean and
        `true`, `1.0` or `"1"` for an integer; such a body is refused (422, pointing at
        each value) although a lax reading would take it. (The push CLI's CSV reading,
        which has only text, stays lax.)"""
        if self.body_model is not None:
            try:
                return self.body_model.model_validate_json(data, strict=True)
            except pydantic.ValidationError as refused:
                strictly = refused
            try:
                self.body_model.model_validate_json(data)
            except pydantic.ValidationError:
                pass  # refused however it is read: FastAPI says why, as before
            else:
                raise RequestValidationError(
                    [
                        {**error, "loc": ("body", *error["loc"])}
                        for error in strictly.errors(include_url=False, include_context=False)
                    ]
                )
        return parse_json(data)


def _body_model(route: APIRoute) -> type[RequestModel] | None:
    """The route's body model when the body is that one model (not embedded in a field
    of its own): a `RequestModel`, which refuses unknown fields."""
    field = route.body_field
    if field is None or route._embed_body_fields:
        return None
    annotation = field.field_info.annotation
    if isinstance(annotation, type) and issubclass(annotation, RequestModel):
        return annotation
    return None


def _query_names(dependant: Dependant) -> frozenset[str]:
    """The query parameters a route and its dependencies take."""
    names = {param.alias for param in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return frozenset(names)


def _takes_bearer(dependant: Dependant) -> bool:
    """Whether a route, or one of its dependencies, takes a bearer token."""
    return isinstance(dependant.call, HTTPBearer) or any(
        _takes_bearer(dependency) for dependency in dependant.dependencies
    )


def _unknown_parameter(name: str) -> Problem:
    return Problem(
        detail=f"Unknown query parameter {name!r}; check its spelling",
        parameter=name,
        title="Unknown parameter",
    )
