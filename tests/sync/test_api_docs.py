"""The API documents itself as it behaves, and its interactive docs work offline."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from imagesync.app import create_app
from imagesync.fetch import errors as fetch_errors
from imagesync.kit.settings import Settings
from imagesync.media import probe
from imagesync.storage.store import StorageError
from imagesync.sync.core.codes import RESULT_CODES, WARNING_CODES
from imagesync.sync.examples import FINISHED_JOB_EXAMPLE, PLAN_EXAMPLE, TRAEDE_EXAMPLE
from imagesync.sync.schemas import ImageSyncRequest, SyncJobRead, SyncPlan
from tests.browser import BROWSER_ARGS, only_the_service, require_chromium
from tests.served import clean_env, serve

README = Path(__file__).parents[2] / "README.md"
PUBLIC = {
    "/healthz",
    "/readyz",
    "/images/{image_id}/{filename}",
    "/images/{image_id}/w{width}/{filename}",
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(Settings(database_url="sqlite:///unused.db")).openapi()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def test_every_protected_operation_takes_a_bearer_token_and_lists_401(
    document: dict[str, Any],
) -> None:
    scheme = document["components"]["securitySchemes"]["token"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    seen = set()
    for method, path, operation in operations(document):
        seen.add(path)
        if path in PUBLIC:
            assert "security" not in operation, (method, path)
            assert "401" not in operation["responses"], (method, path)
        else:
            assert operation["security"] == [{"token": []}], (method, path)
            assert "401" in operation["responses"], (method, path)
    assert seen >= PUBLIC


def test_the_image_sync_documents_its_examples_and_answers(document: dict[str, Any]) -> None:
    operation = document["paths"]["/products/images/sync"]["post"]
    request = document["components"]["schemas"]["ImageSyncRequest"]
    assert request["examples"] == [TRAEDE_EXAMPLE]
    # Found by the fuzzer: `{"product_images": null}` fitted a oneOf of `required` alone.
    # Two named alternatives, each with its one list: ReDoc read "One of ImageSyncRequest /
    # ImageSyncRequest" and its sample sent `"product_images": []` beside `products`.
    assert "properties" not in request
    alternatives = request["oneOf"]
    assert [a["required"] for a in alternatives] == [["products"], ["product_images"]]
    assert [list(a["properties"]) for a in alternatives] == [["products"], ["product_images"]]
    assert len({a["title"] for a in alternatives}) == 2
    assert all(a["additionalProperties"] is False for a in alternatives)
    ImageSyncRequest.model_validate(TRAEDE_EXAMPLE)
    job = document["components"]["schemas"]["SyncJobRead"]
    assert job["examples"] == [FINISHED_JOB_EXAMPLE]
    assert SyncJobRead.model_validate(FINISHED_JOB_EXAMPLE).finished_at is not None
    plan = document["components"]["schemas"]["SyncPlan"]
    assert plan["examples"] == [PLAN_EXAMPLE]
    SyncPlan.model_validate(PLAN_EXAMPLE)
    assert "dry_run" in {p["name"] for p in operation["parameters"]}
    assert set(operation["responses"]["202"]["headers"]) == {"Location", "Retry-After"}
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["anyOf"] == [
        {"$ref": "#/components/schemas/SyncJobRead"},
        {"$ref": "#/components/schemas/SyncPlan"},
    ]


async def test_both_lists_or_neither_is_one_clear_422(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    product = {"item_number": "cool-product-001", "images": []}
    both: dict[str, Any] = {"products": [product], "product_images": [product]}
    for body in (both, {}, {"product_images": None}):
        response = await client.post("/products/images/sync", headers=headers, json=body)
        assert response.status_code == 422
        assert any(
            "exactly one of `products` or `product_images`" in e["detail"]
            for e in response.json()["errors"]
        ), response.json()
    # A typed client that sends the other one as null is understood.
    response = await client.post(
        "/products/images/sync",
        headers=headers,
        json={"products": None, "product_images": [product]},
    )
    assert response.status_code == 200, response.text


def test_the_documented_image_limit_is_this_servers() -> None:
    settings = Settings(database_url="sqlite:///unused.db", max_images_per_product=7)
    schemas = create_app(settings).openapi()["components"]["schemas"]
    images = schemas["ProductImagesIn"]["properties"]["images"]
    assert images["maxItems"] == 7
    assert "At most 7 per product" in images["description"]
    assert schemas["ImageIn"]["properties"]["url"]["maxLength"] == 2048


def _codes_of(base: type[Exception]) -> set[str]:
    found = {str(getattr(base, "code"))}  # noqa: B009 (every class in these trees has one)
    for sub in base.__subclasses__():
        found |= _codes_of(sub)
    return found


def test_every_result_code_is_documented_in_the_schema_and_the_readme(
    document: dict[str, Any],
) -> None:
    raised = (
        _codes_of(fetch_errors.FetchError)
        | _codes_of(probe.MediaError)
        | _codes_of(StorageError)
        | {"store_conflict", "internal_error", "product_not_found", "superseded"}
    )
    assert raised == set(RESULT_CODES)
    code = document["components"]["schemas"]["ImageError"]["properties"]["code"]
    assert code["enum"] == list(RESULT_CODES)
    for name, meaning in RESULT_CODES.items():
        assert f"`{name}`: {meaning}" in code["description"]
    table = dict(re.findall(r"^\| `([a-z_]+)` \| (.+) \|$", README.read_text(), re.MULTILINE))
    assert {c: table.get(c) for c in RESULT_CODES} == RESULT_CODES
    warning = document["components"]["schemas"]["ImageWarning"]["properties"]["code"]
    assert warning["enum"] == list(WARNING_CODES)
    assert {c: table.get(c) for c in WARNING_CODES} == WARNING_CODES


async def test_docs_assets_are_served_by_the_service_itself(client: httpx.AsyncClient) -> None:
    page = (await client.get("/docs")).text
    sources = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page)
    sources += re.findall(r"""(?:url): ?["']([^"']+)["']""", page)
    assert sources
    for source in sources:
        assert not urlsplit(source).netloc, f"{source} is fetched from elsewhere"
        assert (await client.get(source)).status_code == 200, source
    bundle = await client.get("/docs/assets/redoc.standalone.js")
    assert bundle.status_code == 200
    assert len(bundle.content) > 500_000  # the whole of ReDoc
    assert b"cdn.redoc.ly" not in bundle.content  # its footer logo is drawn in place


def test_the_interactive_docs_render_with_the_network_cut_off(tmp_path: Path) -> None:
    """A real browser that can reach nothing but the service renders every operation and
    offers to send a token."""
    chromium = require_chromium()
    from playwright import sync_api

    with serve(tmp_path, clean_env()) as base, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=BROWSER_ARGS)
        page = browser.new_page()
        elsewhere = only_the_service(page, base)
        refused: list[str] = []  # what the pages' Content-Security-Policy blocked
        page.on(
            "console",
            lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
        )
        page.goto(f"{base}/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=20_000)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert any("/products/images/sync" in p for p in paths), paths
        assert page.locator("button.authorize").count() == 1
        page.goto(f"{base}/redoc")
        page.wait_for_selector("[data-section-id^='operation/']", timeout=20_000)
        text = page.locator("body").inner_text()
        browser.close()
    assert "ImageSyncRequest / ImageSyncRequest" not in text
    assert "product_images (the same, by TRAEDE's other name)" in text
    assert '"product_images": [ ]' not in text
    assert '"product_images": []' not in text
    assert elsewhere == []
    # The policy blocks nothing: not even ReDoc's footer logo, which its bundle fetched
    # from Redocly's CDN (the service serves the bundle with the logo in place).
    assert refused == []


async def test_the_docs_pages_allow_their_own_script_only(client: httpx.AsyncClient) -> None:
    for path in ("/docs", "/redoc"):
        page = await client.get(path)
        policy = page.headers["content-security-policy"]
        script = next(d for d in policy.split(";") if d.strip().startswith("script-src"))
        assert "'unsafe-inline'" not in script
        assert "default-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy
    assert "'sha256-" in (await client.get("/docs")).headers["content-security-policy"]
    assert "content-security-policy" not in (await client.get("/healthz")).headers
