"""The admin pages end to end, in Debian's chromium driven by Playwright, against a real
`imagesync serve` that fetched TRAEDE's example from a real file server on 127.0.0.1.

With SAVE_SCREENSHOTS=1 the pages are also saved under docs/screenshots/ (desktop and
phone widths) for the README."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from imagesync.client import Client
from imagesync.sync.examples import TRAEDE_EXAMPLE
from imagesync.sync.schemas import SyncJobRead
from tests.browser import BROWSER_ARGS, only_the_service, require_chromium
from tests.served import clean_env, create_token, free_port, serve

SCREENSHOTS = Path(__file__).parents[2] / "docs" / "screenshots"
# What sticks out past the screen's right edge, to say why a page is too wide.
WIDE = """[...document.querySelectorAll('body *')]
  .filter(e => !e.closest('.scroll') && e.getBoundingClientRect().right > window.innerWidth + 1)
  .map(e => e.tagName + '.' + e.className).slice(0, 10)"""
COLORS = {"Black": ("100", (25, 25, 30)), "White": ("900", (235, 235, 240))}
SIZES = ["XS", "S", "M", "L", "XL"]


@dataclass
class Site:
    base: str
    token: str
    other_token: str
    dead: str  # an allowed origin where nothing listens: its downloads fail, slowly
    files: str  # the file server of the example's pictures


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_chromium()
    root = tmp_path_factory.mktemp("admin")
    pictures = root / "pictures"
    pictures.mkdir()
    for color, (_, rgb) in COLORS.items():
        for side, shade in (("01", 0), ("02", 40)):
            fill = tuple(min(255, c + shade) for c in rgb)
            Image.new("RGB", (480, 600), fill).save(
                pictures / f"{color.lower()}-product-{side}.jpg"
            )
    files_port, dead_port = free_port(), free_port()
    files = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(files_port), "--bind", "127.0.0.1"],
        cwd=pictures,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        **clean_env(),
        "IMAGESYNC_FETCH_ALLOW": f"127.0.0.1:{files_port},127.0.0.1:{dead_port}",
        "IMAGESYNC_LOG_LEVEL": "warning",
        # Every test signs in again from 127.0.0.1 (the limit is tested on its own).
        "IMAGESYNC_SIGN_IN_RATE_LIMIT": "1000/minute",
        # The example's webhook (the file server answers its calls 501) gives up quickly.
        "IMAGESYNC_WEBHOOK_RETRY_SECONDS": "1",
    }
    token = create_token(root, env, "acme")
    other = create_token(root, env, "other")
    try:
        with serve(root, env) as base:
            _example(base, token, f"http://127.0.0.1:{files_port}")
            with Client(base, other) as client:
                client.sync_products([{"item_number": "secret-product"}])
            yield Site(
                base,
                token,
                other,
                f"http://127.0.0.1:{dead_port}",
                f"http://127.0.0.1:{files_port}",
            )
    finally:
        files.terminate()
        files.wait(timeout=10)


def _example(base: str, token: str, files: str) -> None:
    """TRAEDE's documented example, with B2C sorts, and a product whose sync failed,
    announced to a webhook that cannot take them (the file server answers a POST 501)."""
    with Client(base, token) as client:
        client.create_webhook(
            f"{files}/hooks/imagesync", ["sync.job.finished", "sync.product.failed"]
        )
        client.sync_attributes(
            [
                {
                    "name": "Color",
                    "values": [{"value": c, "code": code} for c, (code, _) in COLORS.items()],
                }
            ]
        )
        client.sync_products(
            [
                {
                    "item_number": "cool-product-001",
                    "name": "Cool T-shirt",
                    "variants": [
                        {
                            "sku": f"cool-product-001-{code}-{size}",
                            "attributes": {"Color": color, "Size": size},
                        }
                        for color, (code, _) in COLORS.items()
                        for size in SIZES
                    ],
                },
                {"item_number": "broken-product", "name": "A product whose image is missing"},
            ]
        )
        # TRAEDE's documented request, its pictures served here, in reverse for B2C.
        images: list[dict[str, Any]] = [
            {
                **image,
                "url": image["url"].replace("https://imageserver.com", files),
                "sort_b2c": 5 - image["sort"],
            }
            for image in TRAEDE_EXAMPLE["products"][0]["images"]
        ]
        images.append(
            {
                "url": f"{files}/green-product-01.jpg",
                "sort": 5,
                "attach_to_variants_matching_attribute_code": {"Color": "555"},
                "skip_if_no_variant_matches_attribute_code": True,
            }
        )
        job = client.wait_for_job(
            client.sync_images(
                [{"item_number": "cool-product-001", "use_sort_b2c": True, "images": images}]
            ),
            timeout=60,
        )
        assert job.status == "succeeded", job
        failed = client.wait_for_job(
            client.sync_images(
                [
                    {
                        "item_number": "broken-product",
                        "images": [{"url": f"{files}/gone.jpg", "sort": 1}],
                    }
                ]
            ),
            timeout=60,
        )
        assert failed.status == "failed", failed


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:  # noqa: ARG001 (chromium is checked there)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(require_chromium()), args=BROWSER_ARGS
        )
        yield browser
        browser.close()


def _page(browser: Any, site: Site, *, width: int = 1280, height: int = 900) -> Any:
    context = browser.new_context(viewport={"width": width, "height": height}, base_url=site.base)
    page = context.new_page()
    elsewhere = only_the_service(page, site.base)
    page.elsewhere = elsewhere
    return page


def _sign_in(page: Any, token: str, path: str = "/admin/products") -> None:
    page.goto(path)
    page.get_by_label("API token").fill(token)
    _follow(page, page.get_by_role("button", name="Sign in"))


def _follow(page: Any, target: Any) -> None:
    """Click a link or a form's button and wait for the page it leads to to load: a
    locator read right after a bare click may see the page before, or the new one
    still empty."""
    with page.expect_navigation():
        target.click()


def _shot(page: Any, name: str) -> None:
    if os.environ.get("SAVE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_without_a_session_a_page_sends_to_sign_in_and_back(browser: Any, site: Site) -> None:
    response = httpx.get(f"{site.base}/admin/products/cool-product-001", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/sign-in?next=/admin/products/cool-product-001"
    page = _page(browser, site)
    _sign_in(page, site.token, "/admin/products/cool-product-001")
    assert page.url == f"{site.base}/admin/products/cool-product-001"
    assert page.get_by_role("heading", level=1).inner_text().startswith("cool-product-001")
    cookie = next(c for c in page.context.cookies() if c["name"] == "imagesync_admin")
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/admin")
    assert cookie["expires"] > 0
    assert page.elsewhere == []


def test_a_wrong_token_is_refused_and_signing_out_ends_the_session(
    browser: Any, site: Site
) -> None:
    page = _page(browser, site)
    _sign_in(page, "isk_not-a-token")
    assert page.get_by_role("alert").inner_text() == "That token is unknown or revoked."
    _shot(page, "sign-in")
    _sign_in(page, site.token)
    cookie = next(c for c in page.context.cookies() if c["name"] == "imagesync_admin")
    _follow(page, page.get_by_role("button", name="Sign out"))
    assert page.url.startswith(f"{site.base}/admin/sign-in")
    # The old cookie is worth nothing now.
    stale = httpx.get(
        f"{site.base}/admin/products",
        cookies={"imagesync_admin": cookie["value"]},
        follow_redirects=False,
    )
    assert stale.status_code == 303


def test_the_example_product_shows_its_images_in_order_and_the_variant_matrix(
    browser: Any, site: Site
) -> None:
    page = _page(browser, site)
    _sign_in(page, site.token)
    assert page.get_by_role("cell", name="cool-product-001").count() == 1
    page.get_by_role("link", name="cool-product-001").click()
    page.wait_for_url("**/admin/products/cool-product-001")  # loaded: not the list before
    alts = page.locator(".image img").evaluate_all("els => els.map(e => e.alt)")
    assert alts == [
        "A black t-shirt front",
        "A black t-shirt back",
        "A white t-shirt front",
        "A white t-shirt back",
    ]
    loaded = "[...document.querySelectorAll('.image img')].every(i => i.complete && i.naturalWidth)"
    for _ in range(100):  # every thumbnail loads, from the service itself
        if page.evaluate(loaded):
            break
        page.wait_for_timeout(100)
    assert page.evaluate(loaded)
    rows = page.locator("table.matrix tbody tr")
    assert rows.count() == 10
    black = page.locator("table.matrix tr", has_text="cool-product-001-100-M")
    white = page.locator("table.matrix tr", has_text="cool-product-001-900-M")
    cells = "tr => [...tr.querySelectorAll('td.cell')].map(td => td.classList.contains('yes'))"
    assert black.evaluate(cells) == [True, True, False, False]
    assert white.evaluate(cells) == [False, False, True, True]
    assert "Black 100" in " ".join(black.inner_text().split())
    assert "green-product-01.jpg" in page.locator(".skipped").inner_text()
    # The columns are headed by the images' sort values (they read #1 ... #4 by place).
    headers = "table.matrix thead th.num"
    assert page.locator(headers).all_inner_texts() == ["1", "2", "3", "4"]
    page.get_by_role("link", name="B2C order (sort_b2c)").click()
    page.wait_for_url(re.compile(r"\?order=b2c"))  # loaded: not the page before
    alts = page.locator(".image img").evaluate_all("els => els.map(e => e.alt)")
    assert alts[0] == "A white t-shirt back"
    assert page.locator(headers).all_inner_texts() == ["1", "2", "3", "4"]  # sort_b2c
    assert page.locator(".image dd", has_text="B2C 1").count() == 1
    assert page.elsewhere == []


def test_a_failed_sync_shows_its_error_the_url_that_failed_and_its_job(
    browser: Any, site: Site
) -> None:
    """The product's page showed the code, but not the URL that failed, nor its job."""
    page = _page(browser, site)
    _sign_in(page, site.token, "/admin/products/broken-product")
    text = page.locator("main").inner_text()
    assert "failed" in text
    assert "download_http_error" in text
    failure = page.locator(".failures li").inner_text()
    assert "/gone.jpg — download_http_error: origin answered 404" in failure
    _follow(page, page.locator("main a[href^='/admin/jobs/']"))
    assert page.locator("h1").inner_text().startswith("Job")
    assert "broken-product" in page.locator("main").inner_text()


def test_another_accounts_product_is_not_found(browser: Any, site: Site) -> None:
    page = _page(browser, site)
    _sign_in(page, site.token, "/admin/products/secret-product")
    assert page.get_by_role("heading", level=1).inner_text() == "Not found"
    response = page.goto("/admin/products/secret-product")
    assert response.status == 404
    assert "secret-product" not in page.locator("table").all_inner_texts()


def test_pages_send_strict_security_headers(site: Site) -> None:
    response = httpx.get(f"{site.base}/admin/sign-in")
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"


def test_a_sign_in_without_its_form_token_is_refused(site: Site) -> None:
    response = httpx.post(
        f"{site.base}/admin/sign-in", data={"token": site.token}, follow_redirects=False
    )
    assert response.status_code == 400
    assert "imagesync_admin" not in response.cookies


def test_a_failed_job_is_found_in_three_clicks_with_its_error(browser: Any, site: Site) -> None:
    page = _page(browser, site)
    _sign_in(page, site.token, "/admin")
    _follow(page, page.get_by_role("link", name="Jobs", exact=True))
    _follow(page, page.get_by_role("link", name="has failures (1)"))
    assert page.locator("tbody tr").count() == 1
    assert page.locator("tbody tr td.items").inner_text() == "broken-product"
    _follow(page, page.locator("tbody tr td:first-child a"))
    text = page.locator("main").inner_text()
    assert "download_http_error: origin answered 404" in text
    assert page.get_by_role("link", name="broken-product").count() == 1
    assert page.elsewhere == []


def test_the_dashboard_counts_the_accounts_work(browser: Any, site: Site) -> None:
    page = _page(browser, site)
    _sign_in(page, site.token, "/admin")
    text = " ".join(page.locator("main").inner_text().split())
    assert "Downloads, 24 h 4 " in text
    assert "download_http_error 1" in text
    assert "failed 1" in text


def test_a_running_jobs_page_follows_it_to_its_end(browser: Any, site: Site) -> None:
    # Plain httpx: Playwright's own loop runs in this thread, so no client with a loop. The
    # other account's product: the example account's counts stay as the other tests see them.
    image = {"url": f"{site.dead}/x.jpg", "sort": 1}
    sent = httpx.post(
        f"{site.base}/products/images/sync",
        headers={"Authorization": f"Bearer {site.other_token}"},
        json={"products": [{"item_number": "secret-product", "images": [image]}]},
    )
    assert sent.status_code == 202, sent.text
    job = SyncJobRead.model_validate(sent.json())
    page = _page(browser, site)
    _sign_in(page, site.other_token, f"/admin/jobs/{job.id}")
    assert page.locator("#job[data-live]").count() == 1, "the job ended before it was seen"
    page.evaluate("window.sameDocument = true")
    page.wait_for_selector("#job:not([data-live])", timeout=60_000)
    assert page.evaluate("window.sameDocument") is True  # updated in place, not reloaded
    assert "connection_error" in page.locator("#job").inner_text()


PAGES = {
    "dashboard": "/admin",
    "products": "/admin/products",
    "product": "/admin/products/cool-product-001",
    "jobs": "/admin/jobs",
    "webhooks": "/admin/webhooks",
}


@pytest.mark.parametrize(("width", "suffix"), [(1280, "desktop"), (390, "phone")])
def test_pages_fit_a_phone_and_a_desktop(browser: Any, site: Site, width: int, suffix: str) -> None:
    page = _page(browser, site, width=width, height=844 if width < 500 else 900)
    _sign_in(page, site.token, "/admin")
    failed = page.goto("/admin/jobs?status=failed")
    assert failed is not None
    job = page.locator("tbody tr a").first.get_attribute("href")
    for name, path in [*PAGES.items(), ("job", job)]:
        page.goto(path)
        page.wait_for_load_state("networkidle")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name}: {overflow}px wider than {width}px: {page.evaluate(WIDE)}"
        _shot(page, f"{name}-{suffix}")


def test_a_partially_failed_job_is_found_by_its_failures_and_its_item_number(
    browser: Any, site: Site
) -> None:
    """A job where one of several products failed reads "partially failed": the
    `failed` filter showed nothing, and the list showed ids only."""
    body = {
        "products": [
            {"item_number": "secret-product", "images": []},
            {"item_number": "never-created", "images": []},
        ]
    }
    sent = httpx.post(
        f"{site.base}/products/images/sync",
        json=body,
        headers={"Authorization": f"Bearer {site.other_token}"},
    )
    assert sent.json()["status"] == "partially_failed", sent.text
    page = _page(browser, site)
    _sign_in(page, site.other_token, "/admin/jobs")
    # (Another test's job of this account may have failed too.)
    _follow(page, page.get_by_role("link", name=re.compile(r"^has failures \(\d+\)$")))
    row = page.locator("tbody tr", has_text="never-created")
    assert row.locator("td.items").inner_text() == "secret-product, never-created"
    assert "1 of 2" in row.inner_text()
    page.goto("/admin/jobs")
    page.get_by_label("Search item number").fill("NEVER")
    _follow(page, page.get_by_role("button", name="Search"))
    assert page.locator("tbody tr").count() == 1
    assert page.locator("tbody tr td.items").inner_text() == "secret-product, never-created"
    page.get_by_label("Search item number").fill("no-such-item")
    _follow(page, page.get_by_role("button", name="Search"))
    assert page.locator("tbody tr").inner_text() == "No jobs like this."
    assert page.elsewhere == []


def test_the_dashboard_draws_the_last_day_and_its_codes_lead_to_the_products(
    browser: Any, site: Site
) -> None:
    """The dashboard was all numbers, and its top codes led nowhere."""
    page = _page(browser, site)
    _sign_in(page, site.token, "/admin")
    chart = page.locator("svg.hours")
    assert chart.locator("rect.bar").count() == 24 * 3
    heights = chart.locator("rect.bar.downloaded").evaluate_all(
        "bars => bars.map(b => parseFloat(b.getAttribute('height')))"
    )
    # This hour's downloads (or the last hour's, when the run straddles the hour).
    assert max(heights[-2:]) > 0
    assert heights[:-2] == [0] * 22
    failed = chart.locator("rect.bar.failed").evaluate_all(
        "bars => bars.map(b => parseFloat(b.getAttribute('height')))"
    )
    assert max(failed[-2:]) > 0
    _follow(page, page.get_by_role("link", name="download_http_error"))
    assert page.locator("tbody tr").count() == 1
    _follow(page, page.get_by_role("link", name="broken-product"))
    _follow(page, page.locator("main a[href^='/admin/jobs/']"))
    assert "download_http_error" in page.locator("main").inner_text()
    assert page.elsewhere == []


def test_a_rule_that_matched_no_variant_is_shown_on_the_product(browser: Any, site: Site) -> None:
    """An attr rule naming an attribute the variants do not have, or a value's name
    instead of its code, attached the image to no variant without a word."""
    auth = {"Authorization": f"Bearer {site.other_token}"}
    # Plain httpx: Playwright's own loop runs in this thread.
    attributes = {"attributes": [{"name": "Color", "values": [{"value": "Black", "code": "100"}]}]}
    variant = {"sku": "warned-100", "attributes": {"Color": "Black"}}
    products = {"products": [{"item_number": "warned-product", "variants": [variant]}]}
    for path, body in (("/attributes/sync", attributes), ("/products/sync", products)):
        answer = httpx.post(f"{site.base}{path}", headers=auth, json=body)
        assert answer.status_code == 200, answer.text
    images = [
        {
            "url": f"{site.files}/black-product-01.jpg",
            "sort": 1,
            "attach_to_variants_matching_attribute_code": {"Colour": "100"},
        },
        {
            "url": f"{site.files}/black-product-02.jpg",
            "sort": 2,
            "attach_to_variants_matching_attribute_code": {"Color": "Black"},
        },
    ]
    sent = httpx.post(
        f"{site.base}/products/images/sync?wait=30",
        headers=auth,
        json={"products": [{"item_number": "warned-product", "images": images}]},
    )
    assert sent.json()["status"] == "succeeded", sent.text
    page = _page(browser, site)
    _sign_in(page, site.other_token, "/admin/products/warned-product")
    shown = page.locator(".warnings li").all_inner_texts()
    assert len(shown) == 2, shown
    assert "unknown_attribute: no variant of this product has an attribute 'Colour'" in shown[0]
    assert "unknown_attribute_code: no variant of this product has Color code 'Black'" in shown[1]
    assert page.elsewhere == []


def test_a_webhook_that_gave_up_shows_why_and_is_enabled_again(browser: Any, site: Site) -> None:
    auth = {"Authorization": f"Bearer {site.token}"}
    for _ in range(100):  # its deliveries' two attempts, a second apart
        (hook,) = httpx.get(f"{site.base}/webhooks", headers=auth).json()["webhooks"]
        if not hook["enabled"]:
            break
        time.sleep(0.1)
    assert hook["enabled"] is False, hook
    page = _page(browser, site)
    _sign_in(page, site.token, "/admin/webhooks")
    row = page.locator("tbody tr").first
    assert "disabled" in row.inner_text()
    _follow(page, row.get_by_role("link"))
    assert "disabled" in page.get_by_role("heading", level=1).inner_text()
    assert "still failed after 2 attempts: answered 501" in page.locator("main").inner_text()
    events = page.locator("table.deliveries tbody tr td:nth-child(2)").all_inner_texts()
    assert sorted(set(events)) == ["sync.job.finished", "sync.product.failed"]
    assert "answered 501" in page.locator("table.deliveries").inner_text()
    _shot(page, "webhook")
    _follow(page, page.get_by_role("button", name="Enable again"))
    assert "enabled" in page.get_by_role("heading", level=1).inner_text()
    assert httpx.get(f"{site.base}/webhooks/{hook['id']}", headers=auth).json()["enabled"]
    # Another account sees none of it.
    other = _page(browser, site)
    _sign_in(other, site.other_token, "/admin/webhooks")
    assert "No webhooks yet" in other.locator("main").inner_text()
    assert other.goto(f"/admin/webhooks/{hook['id']}").status == 404
    assert page.elsewhere == []
