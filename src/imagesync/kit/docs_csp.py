"""A Content-Security-Policy for the interactive API docs (`/docs`, `/redoc`): their
assets come from this origin only, and the one inline script of each page is allowed by
its hash, not by allowing inline script. Every other path passes straight through."""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGES = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def policy(html: bytes) -> str:
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'"
        for body in _SCRIPT.findall(html)
    )
    # Swagger UI and ReDoc set styles from script (style attributes, styled-components)
    # and ReDoc runs a worker from a blob; nothing is loaded from another origin.
    return (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
        "worker-src 'self' blob:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


class DocsPolicy:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in PAGES:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body = b""

        async def buffered(message: Message) -> None:
            nonlocal start, body
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            body += message.get("body", b"")
            if message.get("more_body", False):
                return
            headers = [
                (k, v) for k, v in start["headers"] if k.lower() != b"content-security-policy"
            ]
            headers.append((b"content-security-policy", policy(body).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, buffered)


# ReDoc's bundle shows Redocly's logo in its footer from their CDN; the policy above
# would block it (a console error on every visit). The service serves the bundle with
# the logo drawn in place instead: nothing is asked of another origin.
REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
OWN_LOGO = (
    b"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E"
    b"%3Crect width='16' height='16' rx='3' fill='%23888'/%3E%3C/svg%3E"
)


@cache
def _redoc_bundle(path: Path) -> bytes:
    return path.read_bytes().replace(REDOC_LOGO, OWN_LOGO)


def serve_own_redoc_bundle(app: Starlette, static_url: str, static_dir: Path) -> None:
    """Serve `static_url/redoc.standalone.js` with the logo in place, ahead of the
    static files that would serve it as shipped."""
    bundle = static_dir / "redoc.standalone.js"

    async def redoc_js(_: Request) -> Response:
        return Response(
            _redoc_bundle(bundle),
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    app.router.routes.insert(0, Route(f"{static_url}/redoc.standalone.js", redoc_js))
