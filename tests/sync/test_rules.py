"""Rules of the sync contract beyond the happy path: limits, formats, names, isolation."""

from __future__ import annotations

import io
import json
import re
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.client import AsyncClient
from imagesync.kit.settings import Settings
from imagesync.storage.models import Blob
from imagesync.sync.core.codes import WARNING_CODES
from imagesync.sync.core.filenames import content_disposition, effective_filename
from imagesync.sync.core.planner import ImageSpec, VariantCodes, matching_variants, rule_warning
from imagesync.sync.models import SyncJob
from tests.factories import create_account, create_tshirt, sync_ok
from tests.served import create_token, migrated, push, serve
from tests.sync.conftest import MAX_BYTES, MAX_IMAGES, ImageServer, make_image, sync_images


async def count(sessionmaker: async_sessionmaker[AsyncSession], model: type[Any]) -> int:
    async with sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_downloads_over_the_size_limit_fail_as_too_large(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    settings: Settings,
    chunked: bool,
) -> None:
    big = make_image((1, 2, 3)) + b"\0" * (MAX_BYTES + 1)
    url = image_server.add("big.jpg", big, chunked=chunked)
    job = await sync_images(client, headers, [{"url": url, "sort": 1}])
    assert job["products"][0]["images"][0]["error"]["code"] == "too_large"
    assert image_server.hits["big.jpg"] == 1  # not retried
    leftovers = [p for p in (Path(settings.storage_url) / ".tmp").rglob("*") if p.is_file()]
    assert leftovers == []  # the partial download was removed


@pytest.mark.parametrize(
    ("fmt", "content_type", "extension"),
    [
        ("JPEG", "image/jpeg", "jpg"),
        ("PNG", "image/png", "png"),
        ("GIF", "image/gif", "gif"),
        ("WEBP", "image/webp", "webp"),
        ("AVIF", "image/avif", "avif"),
    ],
)
async def test_each_accepted_format_is_recognised_from_its_bytes(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    fmt: str,
    content_type: str,
    extension: str,
) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buffer, fmt)
    # Served under a misleading name and type: the bytes decide.
    url = image_server.add("picture.gif", buffer.getvalue(), content_type="text/plain")
    await sync_images(client, headers, [{"url": url, "sort": 1}])
    image = (await client.get("/products/cool-product-001/images", headers=headers)).json()
    [read] = image["images"]
    assert (read["content_type"], read["width"], read["height"]) == (content_type, 40, 30)
    assert read["filename"] == f"picture.{extension}"


@pytest.mark.parametrize(
    ("custom", "url", "content_type", "expected"),
    [
        (None, "https://cdn.test/a/Shirt%20Front.png", "image/jpeg", "Shirt-Front.jpg"),
        (None, "https://cdn.test/download?id=7", "image/png", "download.png"),
        (None, "https://cdn.test/", "image/webp", "image.webp"),
        ("My shirt!.jpeg", "https://cdn.test/x.jpg", "image/jpeg", "My-shirt.jpg"),
        ("../../etc/passwd", "https://cdn.test/x.jpg", "image/gif", "etc-passwd.gif"),
        ("report.pdf", "https://cdn.test/x.jpg", "image/png", "report.pdf.png"),
        # Letters and digits of every script are kept, composed (NFC).
        (None, "https://cdn.test/bl%C3%A5b%C3%A6r.jpg", "image/jpeg", "blåbær.jpg"),
        ("Rød kjole forside.jpg", "https://cdn.test/x.jpg", "image/jpeg", "Rød-kjole-forside.jpg"),
        ("Grüße aus Köln.png", "https://cdn.test/x.jpg", "image/png", "Grüße-aus-Köln.png"),
        ("Gru\u0308ße.png", "https://cdn.test/x.jpg", "image/png", "Grüße.png"),
        (None, "https://cdn.test/%E6%97%A5%E6%9C%AC.jpg", "image/jpeg", "日本.jpg"),
        ("שמלה אדומה.jpg", "https://cdn.test/x.jpg", "image/jpeg", "שמלה-אדומה.jpg"),
        # Bidi overrides, quotes and separators are unsafe in a header or a path.
        ("a\u202egpj.exe", "https://cdn.test/x.jpg", "image/jpeg", "a-gpj.exe.jpg"),
        ('say "hi"; x=1\\y', "https://cdn.test/x.jpg", "image/png", "say-hi-x-1-y.png"),
    ],
)
def test_filenames_are_sanitised_with_the_real_extension(
    custom: str | None, url: str, content_type: str, expected: str
) -> None:
    spec = ImageSpec(url=url, sort=1, filename=custom)
    assert effective_filename(spec, content_type) == expected


@pytest.mark.parametrize(
    ("custom", "served", "fallback"),
    [
        ("blåbær.jpg", "blåbær.jpg", "blabaer.jpg"),
        ("Größe übersicht.jpg", "Größe-übersicht.jpg", "Grosse-ubersicht.jpg"),
        ("日本 夏.jpg", "日本-夏.jpg", "RiBen-Xia.jpg"),
        ("فستان أحمر.jpg", "فستان-أحمر.jpg", "fstn-hmr.jpg"),
    ],
    ids=["danish", "german", "chinese", "arabic"],
)
async def test_unicode_names_are_kept_and_sent_as_rfc_6266(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    custom: str,
    served: str,
    fallback: str,
) -> None:
    url = image_server.add("photo.jpg", make_image((9, 90, 200)))
    await sync_images(client, headers, [{"url": url, "sort": 1, "filename": custom}])
    [image] = (await client.get("/products/cool-product-001/images", headers=headers)).json()[
        "images"
    ]
    assert image["filename"] == served
    # The file URL is percent-encoded, and it is the file's address.
    assert image["file_url"].split("?")[0].endswith("/" + quote(served, safe=""))
    assert image["file_url"].isascii()
    response = await client.get(image["file_url"])
    assert response.status_code == 200
    assert response.headers["content-disposition"] == (
        f"inline; filename=\"{fallback}\"; filename*=UTF-8''{quote(served, safe='')}"
    )


async def test_identical_bytes_are_stored_once(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    body = make_image((7, 7, 7))
    a = image_server.add("one.jpg", body)
    b = image_server.add("two.jpg", body)
    await sync_images(client, headers, [{"url": a, "sort": 1}, {"url": b, "sort": 2}])
    images = (await client.get("/products/cool-product-001/images", headers=headers)).json()
    assert images["images"][0]["sha256"] == images["images"][1]["sha256"]
    assert await count(sessionmaker, Blob) == 1
    stored = [p for p in Path(settings.storage_url).rglob("*") if p.is_file()]
    assert len(stored) == 1


async def test_the_image_cap_is_enforced_and_nothing_is_recorded(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    images = [{"url": f"https://cdn.test/{i}.jpg", "sort": i} for i in range(MAX_IMAGES + 1)]
    response = await client.post(
        "/products/images/sync",
        headers=headers,
        json={"products": [{"item_number": "cool-product-001", "images": images}]},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "too_many_images"
    assert response.json()["errors"][0]["source"] == {"pointer": "/products/0/images"}
    assert await count(sessionmaker, SyncJob) == 0


async def test_changing_a_code_moves_the_attachments(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    url = image_server.add("navy.jpg")
    await sync_images(
        client,
        headers,
        [{"url": url, "sort": 1, "attach_to_variants_matching_attribute_code": {"Color": "901"}}],
    )
    path = "/products/cool-product-001/images"
    assert (await client.get(path, headers=headers)).json()["images"][0]["variants"] == []
    await sync_ok(
        client,
        headers,
        "/attributes/sync",
        {"attributes": [{"name": "Color", "values": [{"value": "White", "code": "901"}]}]},
    )
    variants = (await client.get(path, headers=headers)).json()["images"][0]["variants"]
    assert variants == sorted(f"cool-product-001-900-{s}" for s in ("XS", "S", "M", "L", "XL"))


async def test_accounts_cannot_see_each_others_jobs_images_or_memory(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    url = image_server.add("private.jpg")
    job = await sync_images(client, headers, [{"url": url, "sort": 1}])
    image = (await client.get("/products/cool-product-001/images", headers=headers)).json()

    bob = await create_account(sessionmaker, "bob")
    assert (await client.get(f"/products/images/sync/{job['id']}", headers=bob)).status_code == 404
    assert (await client.get("/products/cool-product-001/images", headers=bob)).status_code == 404

    # Bob's own product with the same URL: the seen-before memory is per account,
    # so Bob's sync fetches it for himself and gets his own image.
    await create_tshirt(client, bob)
    bob_job = await sync_images(client, bob, [{"url": url, "sort": 1}])
    assert bob_job["products"][0]["counts"]["downloaded"] == 1
    assert image_server.hits["private.jpg"] == 2
    bob_image = (await client.get("/products/cool-product-001/images", headers=bob)).json()
    assert bob_image["images"][0]["id"] != image["images"][0]["id"]
    # Alice's image is untouched by Bob's sync.
    after = (await client.get("/products/cool-product-001/images", headers=headers)).json()
    assert after == image


@given(
    custom=st.one_of(st.none(), st.text(min_size=1, max_size=300)),
    path=st.text(max_size=300),
    content_type=st.sampled_from(
        ["image/jpeg", "image/png", "image/gif", "image/webp", "image/avif"]
    ),
)
def test_every_filename_is_one_safe_segment_with_the_real_extension(
    custom: str | None, path: str, content_type: str
) -> None:
    spec = ImageSpec(url=f"https://cdn.test/{quote(path)}", sort=1, filename=custom)
    name = effective_filename(spec, content_type)
    extension = content_type.removeprefix("image/").replace("jpeg", "jpg")
    assert name.endswith(f".{extension}")
    assert unicodedata.is_normalized("NFC", name)
    assert name[0] not in ".-", name
    # Only letters, marks, digits and ._- : no separator, space, quote, control or override.
    assert all(c in "._-" or unicodedata.category(c)[0] in "LMN" for c in name), name
    assert len(name) <= 160
    disposition = content_disposition(name)
    disposition.encode("latin-1")  # a header value
    assert re.fullmatch(
        r'inline; filename="[A-Za-z0-9_][A-Za-z0-9._-]*"(; filename\*=.*)?', disposition
    )
    if not name.isascii():
        assert unquote(disposition.split("filename*=UTF-8''")[1]) == name


async def test_a_rule_that_matches_no_variant_is_never_silent(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    """A value's name instead of its code ("Black" for 100), or an attribute the variants
    do not have ("Colour"): the image was planned and applied with `variants: []` and no
    word. Now each carries a warning, in the dry run and the job, and the sync succeeds."""
    rules: list[dict[str, str] | None] = [
        {"Color": "100"},
        {"Color": "Black"},
        {"Colour": "100"},
        {"Color": "100", "Size": "M"},  # sizes carry no codes here
        None,
    ]
    images = [
        {
            "url": image_server.add(f"r{n}.jpg"),
            "sort": n,
            "attach_to_variants_matching_attribute_code": rule,
        }
        for n, rule in enumerate(rules)
    ]
    body = {"products": [{"item_number": "cool-product-001", "images": images}]}
    plan = await client.post("/products/images/sync?dry_run=true", json=body, headers=headers)
    assert plan.status_code == 200, plan.text
    planned = [[w["code"] for w in i["warnings"]] for i in plan.json()["products"][0]["images"]]
    expected = [
        [],
        ["unknown_attribute_code"],
        ["unknown_attribute"],
        ["unknown_attribute_code"],
        [],
    ]
    assert planned == expected

    job = await sync_images(client, headers, images)
    assert job["status"] == "succeeded", job
    done = job["products"][0]["images"]
    assert [[w["code"] for w in i["warnings"]] for i in done] == expected
    assert "(their codes: 100, 900)" in done[1]["warnings"][0]["detail"]
    assert "(they have: Color, Size)" in done[2]["warnings"][0]["detail"]
    assert "Size code 'M' (their codes: none)" in done[3]["warnings"][0]["detail"]
    assert [
        len(i["variants"])
        for i in (await client.get("/products/cool-product-001/images", headers=headers)).json()[
            "images"
        ]
    ] == [5, 0, 0, 0, 0]

    # Sent again unchanged: the images are kept, and the warnings said again.
    again = await sync_images(client, headers, images)
    assert [i["outcome"] for i in again["products"][0]["images"]] == ["kept"] * 5
    assert [[w["code"] for w in i["warnings"]] for i in again["products"][0]["images"]] == expected


@given(
    rule=st.dictionaries(
        st.sampled_from(["Color", "Size", "Fit"]), st.sampled_from(["1", "2", "3"]), max_size=3
    ),
    variants=st.lists(
        st.dictionaries(
            st.sampled_from(["Color", "Size"]), st.sampled_from(["1", "2"]), max_size=2
        ),
        max_size=4,
    ),
)
def test_a_warning_comes_exactly_when_a_rule_matches_nothing(
    rule: dict[str, str], variants: list[dict[str, str]]
) -> None:
    found = [VariantCodes(n, codes) for n, codes in enumerate(variants)]
    warning = rule_warning(rule, found)
    assert (warning is not None) == bool(rule and not matching_variants(rule, found))
    if warning is not None:
        assert warning.code in WARNING_CODES


def test_pairs_found_apart_but_never_together_say_so() -> None:
    variants = [
        VariantCodes(1, {"Color": "100", "Size": "S"}),
        VariantCodes(2, {"Color": "900", "Size": "M"}),
    ]
    warning = rule_warning({"Color": "100", "Size": "M"}, variants)
    assert warning is not None
    assert warning.code == "rule_matches_no_variant"
    assert "all of Color=100, Size=M" in warning.detail
    bare = rule_warning({"Color": "100"}, [])
    assert bare is not None
    assert bare.code == "rule_matches_no_variant"
    assert bare.detail.startswith("the product has no variants")


async def test_a_misspelt_attribute_warns_in_a_served_plan_job_and_push(
    tmp_path: Path, database_env: dict[str, str], image_server: ImageServer
) -> None:
    """Against a real `serve`, on either database: a CSV whose attr: column is "Colour"
    (the account's attribute is "Color") gets its warning in push's dry run, in the job,
    and in push's summary and report; --strict makes it exit 1."""
    port = image_server.base.rsplit(":", 1)[1]
    env = migrated(tmp_path, database_env, f"127.0.0.1:{port}")
    token = create_token(tmp_path, env)
    export = tmp_path / "export.csv"
    export.write_text(f"item_number,url,sort,attr:Colour\np1,{image_server.add('p1.jpg')},1,100\n")
    report = tmp_path / "report.json"
    with serve(tmp_path, env) as base:
        async with AsyncClient(base, token) as api:
            await api.sync_attributes(
                [{"name": "Color", "values": [{"value": "Black", "code": "100"}]}]
            )
            await api.sync_products(
                [
                    {
                        "item_number": "p1",
                        "variants": [{"sku": "p1-b", "attributes": {"Color": "Black"}}],
                    }
                ]
            )

        code, said = await push(tmp_path, env, base, token, str(export), "--dry-run", "--strict")
        assert code == 1, said
        assert "unknown_attribute" in said
        code, said = await push(tmp_path, env, base, token, str(export), "--report", str(report))
        assert code == 0, said
        assert "Warnings: 1 image whose rule matched no variant" in said
        [warning] = json.loads(report.read_text())["warnings"]
        assert warning["code"] == "unknown_attribute"
        assert "'Colour'" in warning["detail"]
        async with AsyncClient(base, token) as api:
            job = await api.sync_images(
                [
                    {
                        "item_number": "p1",
                        "images": [
                            {
                                "url": image_server.url("p1.jpg"),
                                "sort": 1,
                                "attach_to_variants_matching_attribute_code": {"Colour": "100"},
                            }
                        ],
                    }
                ],
                wait=20,
            )
    [image] = job.products[0].images
    assert (job.status, image.outcome) == ("succeeded", "kept")
    assert [w.code for w in image.warnings] == ["unknown_attribute"]
