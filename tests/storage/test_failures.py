"""A store that refuses writes (a read-only disk, a bucket that is gone) fails the
product's attempt with `storage_error`, shown on the job at once; the product is tried
again with backoff and recovers when the store comes back, downloading nothing twice."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from fastapi import FastAPI

from imagesync.kit.settings import Settings
from tests.conftest import S3Server
from tests.media import samples
from tests.sync.conftest import ImageServer, images_of, server_settings
from tests.waiting import wait_for


@dataclass
class Refusal:
    """Makes the service's store refuse writes, and lets it write again."""

    kind: str
    staging: Path
    root: Path | None = None
    s3: S3Server | None = None
    bucket: str = ""

    def refuse(self, *, staging_too: bool = False) -> None:
        if self.root is not None:
            # Immutable: refused even to root, unlike a chmod.
            subprocess.run(["chattr", "-R", "+i", str(self.root)], check=True)
        else:
            self._client().delete_bucket(Bucket=self.bucket)
        if staging_too:
            subprocess.run(["chattr", "-R", "+i", str(self.staging)], check=True)

    def allow(self) -> None:
        if self.root is not None:
            subprocess.run(["chattr", "-R", "-i", str(self.root)], check=True)
        else:
            self._client().create_bucket(Bucket=self.bucket)
        subprocess.run(["chattr", "-R", "-i", str(self.staging)], check=False)

    def _client(self) -> Any:
        assert self.s3 is not None
        return boto3.client(
            "s3",
            endpoint_url=self.s3.endpoint,
            aws_access_key_id=self.s3.options.access_key_id,
            aws_secret_access_key=self.s3.options.secret_access_key,
            region_name=self.s3.options.region,
        )


@pytest.fixture(params=["local", "s3"])
def refusal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Refusal]:
    staging = tmp_path / "staging"
    if request.param == "local":
        if shutil.which("chattr") is None or os.geteuid() != 0:
            pytest.skip("a read-only directory needs chattr and root here")
        found = Refusal("local", staging, root=tmp_path / "files")
    else:
        s3: S3Server = request.getfixturevalue("s3_server")
        found = Refusal("s3", staging, s3=s3, bucket=s3.new_bucket())
    yield found
    for folder in (found.root, found.staging):
        if folder is not None and folder.exists():
            subprocess.run(["chattr", "-R", "-i", str(folder)], check=False)


@pytest.fixture
def settings(
    database_url: str, tmp_path: Path, image_server: ImageServer, refusal: Refusal
) -> Settings:
    storage: dict[str, Any] = {}
    if refusal.s3 is not None:
        storage = {
            "storage_url": f"s3://{refusal.bucket}",
            "s3_endpoint": refusal.s3.endpoint,
            "s3_region": refusal.s3.options.region,
            "s3_access_key_id": refusal.s3.options.access_key_id,
            "s3_secret_access_key": refusal.s3.options.secret_access_key,
        }
    return server_settings(
        database_url,
        tmp_path,
        image_server,
        fetch_retries=0,
        rendition_widths="",
        task_max_attempts=2,
        staging_dir=str(refusal.staging),
        **storage,
    )


async def post(client: httpx.AsyncClient, headers: dict[str, str], urls: list[str]) -> str:
    images = [{"url": url, "sort": i} for i, url in enumerate(urls, 1)]
    body = {"products": [{"item_number": "cool-product-001", "images": images}]}
    response = await client.post("/products/images/sync", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def job(client: httpx.AsyncClient, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    response = await client.get(f"/products/images/sync/{job_id}", headers=headers)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def shown(
    client: httpx.AsyncClient, headers: dict[str, str], job_id: str, seconds: float = 5
) -> dict[str, Any]:
    """The job's product once it shows its storage error."""

    async def erred() -> bool:
        product = (await job(client, headers, job_id))["products"][0]
        return (product.get("error") or {}).get("code") == "storage_error"

    await wait_for(erred, seconds)
    product: dict[str, Any] = (await job(client, headers, job_id))["products"][0]
    return product


async def final(
    client: httpx.AsyncClient, headers: dict[str, str], job_id: str, seconds: float = 30
) -> dict[str, Any]:
    async def done() -> bool:
        return (await job(client, headers, job_id))["status"] not in ("queued", "running")

    await wait_for(done, seconds)
    return await job(client, headers, job_id)


async def test_a_refused_write_is_shown_at_once_and_waited_for_with_the_bytes_in_hand(
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    refusal: Refusal,
) -> None:
    app.state.sync_context.store_waits = (0.2,) * 200  # keep waiting: the bytes stay in hand
    known = image_server.add("known.jpg", samples.jpeg(300, 200))
    if refusal.kind == "local":  # an image stored before the disk turned read-only
        first = await post(client, headers, [known])
        assert (await final(client, headers, first))["status"] == "succeeded"
    new = image_server.add("new.jpg", samples.jpeg(320, 200))
    other = image_server.add("other.jpg", samples.jpeg(340, 200))
    urls = [known, new, other] if refusal.kind == "local" else [new, other]

    refusal.refuse()
    try:
        job_id = await post(client, headers, urls)
        product = await shown(client, headers, job_id)
        assert product["status"] == "running"  # still trying: waiting for the store
        assert "waiting for the store" in product["error"]["detail"]
        assert (await job(client, headers, job_id))["status"] == "running"
    finally:
        refusal.allow()

    read = await final(client, headers, job_id)
    assert read["status"] == "succeeded", read
    assert [i["url"] for i in await images_of(client, headers)] == urls
    assert image_server.hits["new.jpg"] == 1
    assert image_server.hits["other.jpg"] == 1
    assert image_server.hits["known.jpg"] == (1 if refusal.kind == "local" else 0)


async def test_a_product_whose_store_stays_down_is_retried_then_fails_with_storage_error(
    tmp_path: Path,
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    refusal: Refusal,
) -> None:
    app.state.sync_context.store_waits = ()  # give up on the store at once
    body = samples.jpeg(300, 200)
    url = image_server.add("new.jpg", body)
    refusal.refuse()
    try:
        job_id = await post(client, headers, [url])
        product = await shown(client, headers, job_id)
        assert product["status"] in ("queued", "running")  # to be tried again
        assert "tried again in 2 s (attempt 1 of 2)" in product["error"]["detail"]
        read = await final(client, headers, job_id, seconds=20)
    finally:
        refusal.allow()
    assert read["status"] == "failed"
    (product,) = read["products"]
    assert product["status"] == "failed"
    assert product["error"]["code"] == "storage_error"
    assert product["images"][0]["error"]["code"] == "storage_error"
    assert await images_of(client, headers) == []
    # The tenant reads the code and the kind of store, never a server path or a key.
    assert "the " in product["images"][0]["error"]["detail"]
    assert str(tmp_path) not in json.dumps(read)
    assert hashlib.sha256(body).hexdigest() not in json.dumps(read)  # nor its key
    # Each attempt used the bytes kept from the first: the origin was asked once.
    assert image_server.hits["new.jpg"] == 1


async def test_a_read_only_staging_folder_costs_no_download(
    tmp_path: Path,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    refusal: Refusal,
) -> None:
    url = image_server.add("new.jpg", samples.jpeg(300, 200))
    refusal.refuse(staging_too=True)
    try:
        job_id = await post(client, headers, [url])
        product = await shown(client, headers, job_id)
        assert "could not stage a download" in product["error"]["detail"]
        assert str(tmp_path) not in json.dumps(product)  # the path is the operator's
        assert image_server.hits["new.jpg"] == 0  # refused before asking the origin
    finally:
        refusal.allow()
    read = await final(client, headers, job_id)
    assert read["status"] == "succeeded", read
    assert image_server.hits["new.jpg"] == 1
