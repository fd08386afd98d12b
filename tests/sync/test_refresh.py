"""Refreshing images whose origin changed the bytes behind the same URL (`?refresh=changed`
or `"refresh": true`): one conditional GET per known image, a 304 changes nothing, new
bytes replace exactly that image's file and renditions under the same id, and the old
bytes go with the collector. Real HTTP, a real image server, both databases."""

from __future__ import annotations

import email.utils
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.client import AsyncClient
from imagesync.kit.clock import Clock
from imagesync.kit.db import session_scope
from imagesync.kit.settings import Settings
from imagesync.storage.collector import collect
from imagesync.storage.models import Blob
from imagesync.sync.models import Source
from imagesync.sync.run.context import SyncContext
from tests.factories import sync_ok
from tests.media import samples
from tests.served import create_token, migrated, push, serve
from tests.storage.test_lifecycle import stored_keys, wait_for_renditions
from tests.sync.conftest import ImageServer, images_of, server_settings

SYNC = "/products/images/sync"
MONDAY = "Mon, 30 Nov 2026 10:00:00 GMT"
MIDNIGHT = datetime(2026, 11, 30, tzinfo=UTC)
TUESDAY = "Tue, 01 Dec 2026 10:00:00 GMT"


@pytest.fixture
def settings(database_url: str, tmp_path: Path, image_server: ImageServer) -> Settings:
    return server_settings(
        database_url, tmp_path, image_server, fetch_retries=0, rendition_widths="200"
    )


def picture(n: int) -> bytes:
    return samples.jpeg(300 + n, 200)  # each its own bytes and width; a 200 px rendition


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def local(url: str) -> str:
    return url.removeprefix("http://imagesync.test")


async def sync(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    images: list[dict[str, Any]],
    *,
    item: str = "cool-product-001",
    query: str = "",
) -> dict[str, Any]:
    body = {"products": [{"item_number": item, "images": images}]}
    response = await client.post(f"{SYNC}?wait=30{query}", json=body, headers=headers)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def outcomes(job: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(i["outcome"], i["refresh"]) for i in job["products"][0]["images"]]


def counts(job: dict[str, Any], *names: str) -> dict[str, int]:
    found: dict[str, int] = job["products"][0]["counts"]
    return {name: found[name] for name in names}


async def test_new_bytes_replace_exactly_that_image_and_a_304_changes_nothing(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: Clock,
) -> None:
    a = {"url": image_server.add("a.jpg", picture(1), etag='"a1"'), "sort": 1}
    b = {"url": image_server.add("b.jpg", picture(2), last_modified=MONDAY), "sort": 2}
    assert (await sync(client, headers, [a, b]))["status"] == "succeeded"
    await wait_for_renditions(sessionmaker)
    before = await images_of(client, headers)

    # The DAM overwrites a.jpg in place: new bytes, new ETag, the same URL.
    image_server.add("a.jpg", picture(3), etag='"a2"')
    plain = await sync(client, headers, [a, b])  # the nightly push does not ask
    assert counts(plain, "kept", "downloaded", "refreshed", "unchanged") == {
        "kept": 2,
        "downloaded": 0,
        "refreshed": 0,
        "unchanged": 0,
    }
    assert image_server.conditional == []
    assert image_server.hits == {"a.jpg": 1, "b.jpg": 1}

    job = await sync(client, headers, [a, b], query="&refresh=changed")
    assert job["status"] == "succeeded", job
    assert outcomes(job) == [("updated", "refreshed"), ("kept", "unchanged")]
    assert counts(job, "updated", "kept", "downloaded", "refreshed", "unchanged") == {
        "updated": 1,
        "kept": 1,
        "downloaded": 1,
        "refreshed": 1,
        "unchanged": 1,
    }
    # Each origin was asked with what it had said of its bytes.
    assert sorted(image_server.conditional) == [("a.jpg", '"a1"', None), ("b.jpg", None, MONDAY)]
    assert image_server.not_modified == {"b.jpg": 1}

    after = await images_of(client, headers)
    assert [i["id"] for i in after] == [i["id"] for i in before]
    assert after[0]["sha256"] == sha(picture(3))
    assert after[0]["width"] == 303
    assert after[1] == before[1]
    assert after[0]["file_url"] != before[0]["file_url"]
    assert (await client.get(local(after[0]["file_url"]))).content == picture(3)
    await wait_for_renditions(sessionmaker)
    settled = await images_of(client, headers)
    (rendition,) = settled[0]["renditions"]
    assert rendition["state"] == "ready"
    assert rendition["url"] != before[0]["renditions"][0]["url"]
    webp = await client.get(local(rendition["url"]))
    assert webp.status_code == 200
    assert webp.headers["etag"] == f'"{sha(picture(3))}-w200"'

    # Asked again: both origins answer 304, and nothing changes or is downloaded.
    again = await sync(client, headers, [a, b], query="&refresh=changed")
    assert outcomes(again) == [("kept", "unchanged"), ("kept", "unchanged")]
    assert counts(again, "downloaded", "refreshed", "unchanged") == {
        "downloaded": 0,
        "refreshed": 0,
        "unchanged": 2,
    }
    assert image_server.conditional[-2:] in (
        [("a.jpg", '"a2"', None), ("b.jpg", None, MONDAY)],
        [("b.jpg", None, MONDAY), ("a.jpg", '"a2"', None)],
    )
    assert image_server.not_modified == {"a.jpg": 1, "b.jpg": 2}
    assert await images_of(client, headers) == settled

    # The old bytes and their rendition go after the grace period; the new stay.
    ctx: SyncContext = app.state.sync_context
    clock.advance(days=8)
    collected = await collect(ctx.blobs, grace=timedelta(days=7))
    assert (collected.blobs, collected.files) == (1, 2)
    assert len(await stored_keys(app)) == 4  # a's new bytes, b's, and a rendition of each
    for image in await images_of(client, headers):
        assert (await client.get(local(image["file_url"]))).status_code == 200


async def test_only_the_images_that_ask_are_asked(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    a = {"url": image_server.add("a.jpg", picture(1), etag='"a1"'), "sort": 1}
    b = {"url": image_server.add("b.jpg", picture(2), etag='"b1"'), "sort": 2}
    await sync(client, headers, [a, b])
    image_server.add("a.jpg", picture(3), etag='"a2"')
    image_server.add("b.jpg", picture(4), etag='"b2"')

    job = await sync(client, headers, [a, {**b, "refresh": True}])
    assert outcomes(job) == [("kept", None), ("updated", "refreshed")]
    assert image_server.conditional == [("b.jpg", '"b1"', None)]
    shas = [i["sha256"] for i in await images_of(client, headers)]
    assert shas == [sha(picture(1)), sha(picture(4))]


async def test_an_origin_without_validators_is_downloaded_and_compared(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    a = {"url": image_server.add("a.jpg", picture(1)), "sort": 1}
    await sync(client, headers, [a])

    same = await sync(client, headers, [a], query="&refresh=changed")
    assert outcomes(same) == [("kept", "unchanged")]
    assert counts(same, "downloaded", "unchanged") == {"downloaded": 1, "unchanged": 1}
    assert image_server.conditional == []  # nothing to make it conditional with

    image_server.add("a.jpg", picture(2))
    changed = await sync(client, headers, [a], query="&refresh=changed")
    assert outcomes(changed) == [("updated", "refreshed")]
    assert [i["sha256"] for i in await images_of(client, headers)] == [sha(picture(2))]
    assert image_server.hits["a.jpg"] == 3


async def test_a_refresh_that_fails_changes_nothing(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    a = {"url": image_server.add("a.jpg", picture(1), etag='"a1"'), "sort": 1}
    await sync(client, headers, [a])
    await wait_for_renditions(sessionmaker)
    before = await images_of(client, headers)
    image_server.add("a.jpg", picture(2), status=404)

    job = await sync(client, headers, [a], query="&refresh=changed")
    assert job["status"] == "failed"
    (image,) = job["products"][0]["images"]
    assert (image["outcome"], image["error"]["code"]) == ("failed", "download_http_error")
    assert await images_of(client, headers) == before
    assert (await client.get(local(before[0]["file_url"]))).content == picture(1)


async def test_new_bytes_of_a_failed_product_are_not_downloaded_again(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """A product that fails keeps its images (another image could not be fetched), but
    the refreshed bytes are its source's from then on: the next refresh takes them from
    the store on a 304."""
    a = {"url": image_server.add("a.jpg", picture(1), etag='"a1"'), "sort": 1}
    await sync(client, headers, [a])
    await wait_for_renditions(sessionmaker)
    before = await images_of(client, headers)
    image_server.add("a.jpg", picture(2), etag='"a2"')
    missing = {"url": image_server.url("missing.jpg"), "sort": 2}

    failed = await sync(client, headers, [a, missing], query="&refresh=changed")
    assert failed["status"] == "failed"
    assert await images_of(client, headers) == before
    assert image_server.hits["a.jpg"] == 2

    job = await sync(client, headers, [a], query="&refresh=changed")
    assert outcomes(job) == [("updated", "refreshed")]
    assert counts(job, "downloaded", "refreshed") == {"downloaded": 0, "refreshed": 1}
    assert image_server.not_modified == {"a.jpg": 1}
    (image,) = await images_of(client, headers)
    assert (image["id"], image["sha256"]) == (before[0]["id"], sha(picture(2)))


async def test_a_source_shared_by_two_products_is_refreshed_for_the_one_that_asks(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: Clock,
) -> None:
    await sync_ok(client, headers, "/products/sync", {"products": [{"item_number": "other"}]})
    a = {"url": image_server.add("a.jpg", picture(1), etag='"a1"'), "sort": 1}
    await sync(client, headers, [a])
    await sync(client, headers, [a], item="other")
    await wait_for_renditions(sessionmaker)
    other = await images_of(client, headers, "other")
    image_server.add("a.jpg", picture(2), etag='"a2"')

    await sync(client, headers, [a], query="&refresh=changed")
    assert [i["sha256"] for i in await images_of(client, headers)] == [sha(picture(2))]
    assert await images_of(client, headers, "other") == other  # it did not ask

    # The product that asked drops the image: only the source remembers the new bytes,
    # while the other product's image still comes from that source. The collector must
    # keep both (a source outlives the images that come from it).
    await sync(client, headers, [])
    await wait_for_renditions(sessionmaker)
    clock.advance(days=8)
    ctx: SyncContext = app.state.sync_context
    await collect(ctx.blobs, grace=timedelta(days=7))
    (kept,) = await images_of(client, headers, "other")
    assert (await client.get(local(kept["file_url"]))).content == picture(1)
    async with session_scope(sessionmaker) as session:
        assert await session.scalar(select(func.count()).select_from(Source)) == 1
        assert await session.scalar(select(func.count()).select_from(Blob)) == 2

    # Asked now, it takes the source's new bytes on the origin's 304: no download.
    job = await sync(client, headers, [a], item="other", query="&refresh=changed")
    assert outcomes(job) == [("updated", "refreshed")]
    assert counts(job, "downloaded") == {"downloaded": 0}
    assert image_server.hits["a.jpg"] == 3  # two downloads and this 304
    (image,) = await images_of(client, headers, "other")
    assert (image["id"], image["sha256"]) == (other[0]["id"], sha(picture(2)))
    clock.advance(days=8)
    collected = await collect(ctx.blobs, grace=timedelta(days=7))
    assert collected.blobs == 1  # the old bytes, which no image holds any more


async def test_a_file_url_names_its_bytes_and_only_that_url_is_cached_for_good(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    a = {"url": image_server.add("a.jpg", picture(1), etag='"a1"'), "sort": 1}
    await sync(client, headers, [a])
    (before,) = await images_of(client, headers)
    versioned = local(before["file_url"])
    assert versioned.endswith(f"?v={sha(picture(1))[:16]}")
    served = await client.get(versioned)
    assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
    bare = await client.get(versioned.split("?")[0])
    assert (bare.content, bare.headers["cache-control"]) == (picture(1), "no-cache")

    image_server.add("a.jpg", picture(2), etag='"a2"')
    await sync(client, headers, [a], query="&refresh=changed")
    (after,) = await images_of(client, headers)
    assert local(after["file_url"]).endswith(f"?v={sha(picture(2))[:16]}")
    old = await client.get(versioned)  # an old version's URL: the bytes now, to revalidate
    assert (old.content, old.headers["cache-control"]) == (picture(2), "no-cache")
    assert old.headers["etag"] == f'"{sha(picture(2))}"'


async def test_a_dry_run_says_which_origins_a_refresh_would_ask(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    a = {"url": image_server.add("a.jpg", picture(1), etag='"a1"'), "sort": 1}
    await sync(client, headers, [a])
    new = {"url": image_server.add("new.jpg", picture(2)), "sort": 2}
    body = {"products": [{"item_number": "cool-product-001", "images": [a, new]}]}
    answer = await client.post(f"{SYNC}?dry_run=true&refresh=changed", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    (product,) = answer.json()["products"]
    assert [(i["action"], i["refresh"], i["download"]) for i in product["images"]] == [
        ("keep", True, False),
        ("create", False, True),
    ]
    assert product["counts"]["refresh"] == 1
    assert image_server.conditional == []
    assert image_server.hits == {"a.jpg": 1}


async def test_refresh_takes_only_changed(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    a = {"url": image_server.add("a.jpg", picture(1)), "sort": 1}
    body = {"products": [{"item_number": "cool-product-001", "images": [a]}]}
    answer = await client.post(f"{SYNC}?refresh=all", json=body, headers=headers)
    assert answer.status_code == 422
    (error,) = answer.json()["errors"]
    assert error["source"] == {"parameter": "refresh"}


async def test_push_refresh_against_a_served_process(
    tmp_path: Path, database_env: dict[str, str], image_server: ImageServer
) -> None:
    """`imagesync push --refresh` against a real `serve`: the changed image is
    refreshed, the unchanged one answered 304, and the summary says so."""
    port = image_server.base.rsplit(":", 1)[1]
    env = migrated(tmp_path, database_env, f"127.0.0.1:{port}")
    token = create_token(tmp_path, env)
    a = image_server.add("a.jpg", picture(1), etag='"a1"')
    b = image_server.add("b.jpg", picture(2), last_modified=MONDAY)
    export = tmp_path / "export.csv"
    export.write_text(f"item_number,url,sort\np1,{a},1\np1,{b},2\n")
    with serve(tmp_path, env) as base:
        async with AsyncClient(base, token) as api:
            await api.sync_products([{"item_number": "p1", "variants": []}])

        code, said = await push(tmp_path, env, base, token, str(export))
        assert code == 0, said
        async with AsyncClient(base, token) as api:
            ids = [i.id for i in (await api.product_images("p1")).images]
        image_server.add("a.jpg", picture(3), etag='"a2"', last_modified=TUESDAY)
        code, said = await push(tmp_path, env, base, token, str(export), "--refresh")
        assert code == 0, said
        assert "│ refreshed │ 1 │" in said
        assert "│ unchanged │ 1 │" in said
        async with AsyncClient(base, token) as api:
            images = (await api.product_images("p1")).images
    assert [i.sha256 for i in images] == [sha(picture(3)), sha(picture(2))]
    assert [i.id for i in images] == ids
    assert sorted(image_server.conditional) == [("a.jpg", '"a1"', None), ("b.jpg", None, MONDAY)]


NAMES = ("a.jpg", "b.jpg", "c.jpg")
# One step: the files the origin overwrites (and whether it sends an ETag, a
# Last-Modified or neither), then the files a sync asks to refresh.
STEPS = st.lists(
    st.tuples(
        st.sets(st.sampled_from(NAMES)),
        st.sampled_from(["etag", "last_modified", "neither"]),
        st.sets(st.sampled_from(NAMES)),
    ),
    min_size=1,
    max_size=4,
)


@examples(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=STEPS)
async def test_each_image_asked_ends_with_its_origins_bytes_and_only_those_change(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer, steps: Any
) -> None:
    """Whatever the origin overwrote and whatever was asked, in any order: after each
    sync an image asked to be refreshed has its origin's bytes now, one not asked keeps
    its own, every image keeps its id, and the counts say what changed."""
    versions = dict.fromkeys(NAMES, 0)
    serial = max(image_server.hits.values(), default=0) * 100  # examples share the server

    def publish(name: str, validators: str) -> None:
        versions[name] += 1
        n = serial + versions[name] * 3 + NAMES.index(name)
        image_server.add(
            name,
            picture(n),
            etag=f'"{n}"' if validators == "etag" else None,
            # Later for each new version, as a real origin's clock says.
            last_modified=email.utils.format_datetime(MIDNIGHT + timedelta(seconds=n), usegmt=True)
            if validators == "last_modified"
            else None,
        )

    for name in NAMES:
        publish(name, "etag")
    images = [{"url": image_server.url(name), "sort": i} for i, name in enumerate(NAMES)]
    await sync(client, headers, images)
    ids = [i["id"] for i in await images_of(client, headers)]
    for changed, validators, asked in steps:
        for name in sorted(changed):
            publish(name, validators)
        before = {i["url"].rsplit("/", 1)[1]: i["sha256"] for i in await images_of(client, headers)}
        sent = [{**image, "refresh": NAMES[n] in asked} for n, image in enumerate(images)]
        job = await sync(client, headers, sent)
        assert job["status"] == "succeeded", job
        after = await images_of(client, headers)
        assert [i["id"] for i in after] == ids
        for name, image in zip(NAMES, after, strict=True):
            origin = sha(image_server.routes[name].body)
            assert image["sha256"] == (origin if name in asked else before[name]), name
        replaced = sum(before[n] != i["sha256"] for n, i in zip(NAMES, after, strict=True))
        assert counts(job, "refreshed", "unchanged") == {
            "refreshed": replaced,
            "unchanged": len(asked) - replaced,
        }
