"""The admin pages' routes. Every page but sign-in needs a session and reads only the
signed-in account's data; a request without one is sent to sign in."""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import AfterValidator, StringConstraints
from starlette.responses import RedirectResponse, Response

from imagesync.catalog import products as catalog_products
from imagesync.kit.deps import SessionDep
from imagesync.kit.errors import NotFound, Unauthorized
from imagesync.kit.pagination import MAX_PAGE, PageParams
from imagesync.kit.ratelimit import Limit
from imagesync.kit.schemas import Identifier, Key, storable
from imagesync.sync import results as sync_results
from imagesync.sync.reads import images as sync_images
from imagesync.sync.reads import jobs as sync_jobs
from imagesync.sync.reads import overview
from imagesync.sync.webhooks import service as webhook_service
from imagesync.sync.webhooks.schemas import WebhookChange
from imagesync.web import sessions
from imagesync.web.sessions import COOKIE, SIGN_IN_COOKIE, SignedIn

HERE = Path(__file__).parent
PAGE_SIZE = 20
# No inline script or style anywhere; every asset from this origin; never in a frame.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(directory=HERE / "templates")


# What a search box may send: text both databases can compare, of a sensible length.
SearchText = Annotated[str, StringConstraints(max_length=255), AfterValidator(storable)]


def _bounded(page: int) -> int:
    """A page number both databases can take an offset of (an unbounded one overflowed)."""
    return min(max(page, 1), MAX_PAGE)


class _SignInFirst(Exception):
    def __init__(self, path: str) -> None:
        self.path = path


class PageRoute(APIRoute):
    """Every page answers with the security headers; a missing product or job is a 404
    page, a request without a session a redirect to sign in."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_headers(request: Request) -> Response:
            try:
                response = await handler(request)
            except NotFound as exc:
                response = render(request, "not_found.html", {"detail": exc.detail}, status=404)
            except RequestValidationError:
                # A path or parameter no page takes (a NUL in an id, a page that is not a
                # number): no such page, never a crash nor the API's JSON.
                detail = "There is no such page."
                response = render(request, "not_found.html", {"detail": detail}, status=404)
            except _SignInFirst as exc:
                target = "/admin/sign-in?next=" + quote(exc.path, safe="/")
                response = RedirectResponse(target, status_code=303)
            response.headers.update(SECURITY_HEADERS)
            return response

        return with_headers


router = APIRouter(prefix="/admin", route_class=PageRoute, include_in_schema=False)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/admin/static", StaticFiles(directory=HERE / "static"), name="admin-static")


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    me: SignedIn | None = None,
) -> Response:
    return templates.TemplateResponse(request, template, {"me": me, **context}, status_code=status)


async def _me(session: SessionDep, request: Request) -> SignedIn:
    me = await sessions.signed_in(session, request)
    if me is None:
        raise _SignInFirst(
            request.url.path + (f"?{request.url.query}" if request.url.query else "")
        )
    return me


async def _form(request: Request) -> dict[str, str]:
    fields = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    return {name: values[0] for name, values in fields.items()}


def _safe_next(target: str | None) -> str:
    """Only a path of these pages is followed after signing in."""
    if target and (target == "/admin" or target.startswith(("/admin/", "/admin?"))):
        return target
    return "/admin"


# -- the dashboard -----------------------------------------------------------------------


@router.get("")
async def dashboard(request: Request, session: SessionDep) -> Response:
    me = await _me(session, request)
    board = await overview.dashboard(session, me.account.id)
    return render(
        request,
        "dashboard.html",
        {"board": board, "statuses": overview.JOB_STATUSES, "active": "dashboard"},
        me=me,
    )


# -- signing in and out ----------------------------------------------------------------


@router.get("/sign-in")
async def sign_in_form(request: Request, next: str | None = None) -> Response:
    return _sign_in_page(request, next=next)


def _sign_in_page(
    request: Request, *, next: str | None, error: str | None = None, status: int = 200
) -> Response:
    csrf = secrets.token_urlsafe(32)
    response = render(
        request,
        "sign_in.html",
        {"csrf": csrf, "next": _safe_next(next), "error": error},
        status=status,
    )
    sessions.set_cookie(response, request, SIGN_IN_COOKIE, csrf, max_age=3600)
    return response


@router.post("/sign-in")
async def sign_in(request: Request, session: SessionDep) -> Response:
    limit: Limit | None = request.app.state.sign_in_limit
    if limit is not None:  # tokens are not to be guessed at speed: per client address
        verdict = await limit.hit(request.client.host if request.client else "")
        if not verdict.allowed:
            page = _sign_in_page(
                request,
                next=None,
                error=f"Too many attempts; try again in {verdict.retry_after} s.",
                status=429,
            )
            page.headers["Retry-After"] = str(verdict.retry_after)
            return page
    form = await _form(request)
    if not sessions.same_token(form.get("csrf"), request.cookies.get(SIGN_IN_COOKIE)):
        return _sign_in_page(
            request,
            next=form.get("next"),
            error="The form expired; please sign in again.",
            status=400,
        )
    try:
        token, _account = await sessions.sign_in(session, form.get("token", ""))
    except Unauthorized:
        return _sign_in_page(
            request,
            next=form.get("next"),
            error="That token is unknown or revoked.",
            status=401,
        )
    response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
    max_age = int(sessions.LIFETIME.total_seconds())
    sessions.set_cookie(response, request, COOKIE, token, max_age=max_age)
    response.delete_cookie(SIGN_IN_COOKIE, path=sessions.PATH)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, session: SessionDep) -> Response:
    # No CSRF check: signing out is harmless, and a form without its token (an old tab)
    # must still end the session on the server, not only drop the cookie.
    await sessions.sign_out(session, request)
    response = RedirectResponse("/admin/sign-in", status_code=303)
    response.delete_cookie(COOKIE, path=sessions.PATH)
    return response


# -- products --------------------------------------------------------------------------


@router.get("/products")
async def products(
    request: Request,
    session: SessionDep,
    q: SearchText = "",
    failed: SearchText = "",
    page: int = 1,
) -> Response:
    """The products; `failed`: only those a sync failed with this code in the last 24 h
    (the dashboard's top error codes link here)."""
    me = await _me(session, request)
    page = _bounded(page)
    only = await overview.items_failed_with(session, me.account.id, failed) if failed else None
    rows, total = await overview.product_rows(
        session,
        me.account.id,
        search=q.strip(),
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
        only=only,
    )
    pages = max(1, math.ceil(total / PAGE_SIZE))
    return render(
        request,
        "products.html",
        {
            "rows": rows,
            "q": q,
            "failed": failed,
            "page": page,
            "pages": pages,
            "total": total,
            "active": "products",
        },
        me=me,
    )


# A product's page shows its images, and its matrix of variants by images, a page at a time:
# a product of 1,000 variants and 250 images made 39 MB of HTML in one page.
IMAGES_PER_PAGE = 60
VARIANTS_PER_PAGE = 100


@router.get("/products/{item_number:path}")
async def product(
    request: Request,
    item_number: Key,
    session: SessionDep,
    order: str = "b2b",
    page: int = 1,
    rows: int = 1,
) -> Response:
    """`page`: the page of images (thumbnails and the matrix's columns); `rows`: the
    page of variants (the matrix's rows)."""
    me = await _me(session, request)
    found = await catalog_products.get_product(session, me.account, item_number)
    # Read before the images: reading them loads the product again, without its variants.
    every = found.variants
    row_pages = max(1, math.ceil(len(every) / VARIANTS_PER_PAGE))
    rows = min(_bounded(rows), row_pages)
    shown = every[(rows - 1) * VARIANTS_PER_PAGE : rows * VARIANTS_PER_PAGE]
    variants = [catalog_products.variant_read(v) for v in shown]
    channel = "b2c" if order == "b2c" else None
    # Through the API's own file routes, whatever IMAGESYNC_PUBLIC_BASE_URL says: the
    # page's policy allows images from this origin only.
    urls = sync_images.FileUrls(str(request.base_url))
    page = _bounded(page)
    total_images, images = await sync_images.list_images(
        session,
        me.account,
        item_number,
        channel=channel,
        urls=urls,
        page=PageParams(page - 1, IMAGES_PER_PAGE),
    )
    last = await overview.last_sync(session, me.account.id, item_number)
    attribute_names = sorted({name for v in variants for name in v.attributes})
    outcomes = last.result.images if last is not None and last.result is not None else []
    skipped = [i for i in outcomes if i.outcome == "skipped"]
    failed_images = [i for i in outcomes if i.outcome == "failed" and i.error is not None]
    warned = [i for i in outcomes if i.warnings]
    return render(
        request,
        "product.html",
        {
            "product": found,
            "images": images,
            "variants": variants,
            "total_images": total_images,
            "total_variants": len(every),
            "page": page,
            "pages": max(1, math.ceil(total_images / IMAGES_PER_PAGE)),
            "first_image": (page - 1) * IMAGES_PER_PAGE + 1,
            "rows": rows,
            "row_pages": row_pages,
            "first_variant": (rows - 1) * VARIANTS_PER_PAGE + 1,
            "attribute_names": attribute_names,
            "order": "b2c" if channel else "b2b",
            "last": last,
            "skipped": skipped,
            "failed_images": failed_images,
            "warned": warned,
            "active": "products",
        },
        me=me,
    )


# -- jobs ------------------------------------------------------------------------------


@router.get("/jobs")
async def jobs(
    request: Request, session: SessionDep, status: str = "", q: SearchText = "", page: int = 1
) -> Response:
    me = await _me(session, request)
    page = _bounded(page)
    search = q.strip()
    filters = (*overview.JOB_STATUSES, overview.HAS_FAILURES)
    wanted = status if status in filters else None
    counts = await overview.job_counts(session, me.account.id, search=search)
    rows = await overview.job_rows(
        session,
        me.account.id,
        status=wanted,
        search=search,
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    every = sum(n for s, n in counts.items() if s != overview.HAS_FAILURES)
    total = counts.get(wanted, 0) if wanted else every
    return render(
        request,
        "jobs.html",
        {
            "rows": rows,
            "counts": counts,
            "every": every,
            "statuses": overview.JOB_STATUSES,
            "has_failures": overview.HAS_FAILURES,
            "status": wanted or "",
            "q": search,
            "page": page,
            "pages": max(1, math.ceil(total / PAGE_SIZE)),
            "active": "jobs",
        },
        me=me,
    )


@router.get("/jobs/{job_id}")
async def job(request: Request, job_id: Identifier, session: SessionDep) -> Response:
    me = await _me(session, request)
    read = sync_results.job_read(await sync_jobs.get_job(session, me.account, job_id))
    return render(request, "job.html", {"job": read, "active": "jobs"}, me=me)


# -- webhooks --------------------------------------------------------------------------


@router.get("/webhooks")
async def webhooks(request: Request, session: SessionDep) -> Response:
    me = await _me(session, request)
    found = await webhook_service.list_all(session, me.account)
    return render(request, "webhooks.html", {"webhooks": found, "active": "webhooks"}, me=me)


@router.get("/webhooks/{webhook_id}")
async def webhook(
    request: Request, webhook_id: Identifier, session: SessionDep, page: int = 1
) -> Response:
    me = await _me(session, request)
    page = _bounded(page)
    found = webhook_service.webhook_read(await webhook_service.get(session, me.account, webhook_id))
    listed = await webhook_service.deliveries(
        session, me.account, webhook_id, PageParams(page - 1, PAGE_SIZE)
    )
    return render(
        request,
        "webhook.html",
        {
            "webhook": found,
            "deliveries": listed.deliveries,
            "total": listed.meta.total,
            "page": page,
            "pages": max(1, listed.meta.pages),
            "active": "webhooks",
        },
        me=me,
    )


@router.post("/webhooks/{webhook_id}/enabled")
async def webhook_enabled(
    request: Request, webhook_id: Identifier, session: SessionDep
) -> Response:
    """The page's button: enable the endpoint again, or disable it."""
    me = await _me(session, request)
    form = await _form(request)
    if not sessions.same_token(form.get("csrf"), me.csrf_token):
        return render(
            request,
            "not_found.html",
            {"detail": "The form expired; please try again."},
            status=400,
            me=me,
        )
    change = WebhookChange(enabled=form.get("enabled") == "true")
    await webhook_service.change(session, me.account, webhook_id, change)
    return RedirectResponse(f"/admin/webhooks/{quote(webhook_id)}", status_code=303)
