"""Hostile files through a real sync, and what follows an applied sync: renditions made
in the background, originals kept byte for byte."""

from __future__ import annotations

import asyncio
import hashlib
import io
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import Tripwire
from tests.media import samples
from tests.sync.conftest import MAX_BYTES, ImageServer, images_of, sync_images


async def renditions_settled(
    client: httpx.AsyncClient, headers: dict[str, str], seconds: float = 20
) -> list[dict[str, Any]]:
    """The product's images once no rendition is pending any more."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        images = await images_of(client, headers)
        pending = [r for i in images for r in i["renditions"] if r["state"] == "pending"]
        if not pending or asyncio.get_running_loop().time() > deadline:
            return images
        await asyncio.sleep(0.05)


async def fetch(client: httpx.AsyncClient, url: str) -> httpx.Response:
    response = await client.get(url.removeprefix("http://imagesync.test"))
    assert response.status_code == 200, response.text
    return response


# -- hostile files: refused with a code, the previous images kept -------------------------

HOSTILE = [
    pytest.param(samples.HTML, "image/jpeg", "not_an_image", id="html-as-jpeg"),
    pytest.param(samples.TEXT, "image/jpeg", "not_an_image", id="text-as-jpeg"),
    pytest.param(samples.truncated_jpeg(), "image/jpeg", "corrupt_image", id="truncated-jpeg"),
    pytest.param(samples.png_with_bad_crc(), "image/png", "corrupt_image", id="bad-crc-png"),
    pytest.param(samples.png_pixel_bomb(), "image/png", "too_many_pixels", id="pixel-bomb"),
    pytest.param(samples.gif(101), "image/gif", "too_many_frames", id="many-frame-gif"),
    # 70 KB of file, 72 MB of 16-bit pixels: over the tests' decode budget of 64 MB.
    pytest.param(samples.png16(3000, 3000), "image/png", "too_much_decoded", id="deep-png"),
    pytest.param(samples.SVG_SCRIPT, "image/svg+xml", "unsupported_format", id="svg-script"),
    pytest.param(samples.SVG_XXE, "image/jpeg", "unsupported_format", id="svg-xxe"),
    pytest.param(b"\xff\xd8\xff" + b"\x00" * (MAX_BYTES + 1), "image/jpeg", "too_large", id="big"),
]


REDIRECTS = [
    pytest.param("http://169.254.169.254/latest/meta-data/", id="to-metadata"),
    pytest.param("http://[fd00:ec2::254]/latest/meta-data/", id="to-metadata-v6"),
    pytest.param("http://2130706433/x.jpg", id="to-loopback-as-a-number"),
    pytest.param("http://[::ffff:10.0.0.1]/x.jpg", id="to-private-mapped"),
    pytest.param("http://127.0.0.1:6379/", id="to-a-loopback-port-not-allowed"),
]


@pytest.mark.parametrize(("body", "content_type", "code"), HOSTILE)
async def test_a_hostile_file_fails_the_product_and_keeps_its_images(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    tripwire: Tripwire,
    body: bytes,
    content_type: str,
    code: str,
) -> None:
    bad = image_server.add("evil.jpg", body, content_type=content_type)
    await fails_keeping_images(client, headers, image_server, bad, code)
    assert tripwire.hosts() == {"127.0.0.1"}


@pytest.mark.parametrize("target", REDIRECTS)
async def test_a_redirect_to_a_forbidden_address_fails_before_connecting(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    tripwire: Tripwire,
    target: str,
) -> None:
    bad = image_server.add("evil.jpg", status=302, location=target)
    await fails_keeping_images(client, headers, image_server, bad, "address_refused")
    port = int(image_server.base.rsplit(":", 1)[1])
    assert set(tripwire.attempts) == {("127.0.0.1", port)}  # only the allowed server


async def fails_keeping_images(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    bad: str,
    code: str,
) -> None:
    good = [{"url": image_server.add("front.jpg"), "sort": 1}]
    assert (await sync_images(client, headers, good))["status"] == "succeeded"
    before = await images_of(client, headers)

    job = await sync_images(client, headers, [*good, {"url": bad, "sort": 2}])

    product = job["products"][0]
    assert product["status"] == "failed"
    assert product["images"][1]["error"]["code"] == code
    assert product["images"][0]["outcome"] == "not_applied"
    assert await images_of(client, headers) == before
    await fetch(client, before[0]["file_url"])  # and its file is still served
    assert image_server.hits["evil.jpg"] == 1  # a bad file is final: never retried


async def test_server_errors_are_retried_and_missing_files_are_not(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    flaky = image_server.add("flaky.jpg", failures_first=1)  # 500, then the image
    job = await sync_images(client, headers, [{"url": flaky, "sort": 1}])
    assert job["products"][0]["status"] == "succeeded"
    assert image_server.hits["flaky.jpg"] == 2

    missing = image_server.url("nowhere.jpg")  # 404
    job = await sync_images(
        client, headers, [{"url": flaky, "sort": 1}, {"url": missing, "sort": 2}]
    )
    assert job["products"][0]["images"][1]["error"]["code"] == "download_http_error"
    assert image_server.hits["nowhere.jpg"] == 1
    assert len(await images_of(client, headers)) == 1


# -- renditions -----------------------------------------------------------------------------


async def test_renditions_follow_the_sync_and_the_original_is_kept_byte_for_byte(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    original = samples.jpeg(1000, 750)
    small = samples.jpeg(300, 200)
    urls = [image_server.add("big.jpg", original), image_server.add("small.jpg", small)]
    job = await sync_images(client, headers, [{"url": u, "sort": i} for i, u in enumerate(urls)])
    assert job["status"] == "succeeded"

    images = await renditions_settled(client, headers)
    big, little = images
    assert [(r["width"], r["state"]) for r in big["renditions"]] == [
        (200, "ready"),
        (400, "ready"),
        (800, "ready"),
    ]
    assert [(r["width"], r["state"]) for r in little["renditions"]] == [(200, "ready")]
    for rendition in big["renditions"]:
        response = await fetch(client, rendition["url"])
        assert response.headers["content-type"] == "image/webp"
        assert int(response.headers["content-length"]) == rendition["size"]
        with Image.open(io.BytesIO(response.content)) as image:
            assert image.format == "WEBP"
            assert image.size == (rendition["width"], rendition["height"])
        assert rendition["height"] == rendition["width"] * 3 // 4
        revalidated = await client.get(
            rendition["url"], headers={"If-None-Match": response.headers["etag"]}
        )
        assert revalidated.status_code == 304

    served = (await fetch(client, big["file_url"])).content
    assert served == original
    assert big["sha256"] == hashlib.sha256(original).hexdigest()


async def test_renditions_are_oriented_and_carry_no_gps(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    rotated = samples.oriented_jpeg(6, 600, 400)  # stored 400x600, shown 600x400
    located = samples.jpeg_with_gps()
    urls = [image_server.add("rotated.jpg", rotated), image_server.add("gps.jpg", located)]
    await sync_images(client, headers, [{"url": u, "sort": i} for i, u in enumerate(urls)])
    rotated_image, gps_image = await renditions_settled(client, headers)
    assert (rotated_image["width"], rotated_image["height"]) == (600, 400)
    rendition = next(r for r in rotated_image["renditions"] if r["width"] == 200)
    with Image.open(io.BytesIO((await fetch(client, rendition["url"])).content)) as image:
        assert image.size == (200, 133)
        pixel = image.convert("RGB").getpixel((5, 5))
        assert isinstance(pixel, tuple)
        assert pixel[0] > 200 > pixel[2]  # red at the top left, as shown
    # The original keeps its metadata; the renditions have none.
    assert (await fetch(client, gps_image["file_url"])).content == located
    for rendition in gps_image["renditions"]:
        with Image.open(io.BytesIO((await fetch(client, rendition["url"])).content)) as image:
            assert not image.getexif()
