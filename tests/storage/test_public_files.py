"""Files served by the bucket itself (`IMAGESYNC_PUBLIC_BASE_URL`): the images' URLs name
its content-addressed keys, and its objects carry their type and an immutable cache
policy, so a CDN in front of it never serves a stale copy."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from imagesync.kit.settings import Settings
from tests.conftest import S3Server
from tests.media import samples
from tests.sync.conftest import ImageServer, server_settings, sync_images
from tests.sync.test_media_pipeline import renditions_settled


@pytest.fixture
def settings(
    database_url: str, tmp_path: Path, image_server: ImageServer, s3_server: S3Server
) -> Settings:
    bucket = s3_server.new_bucket()
    allow_anonymous_reads(s3_server, bucket)
    return server_settings(
        database_url,
        tmp_path,
        image_server,
        rendition_widths="200",
        storage_url=f"s3://{bucket}/catalog",
        public_base_url=f"{s3_server.endpoint}/{bucket}/catalog/",
        s3_endpoint=s3_server.endpoint,
        s3_region=s3_server.options.region,
        s3_access_key_id=s3_server.options.access_key_id,
        s3_secret_access_key=s3_server.options.secret_access_key,
    )


def allow_anonymous_reads(s3: S3Server, bucket: str) -> None:
    """What docs/deployment.md asks of the bucket: anyone may read its objects."""
    import boto3

    read = {
        "Effect": "Allow",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/*",
    }
    boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=s3.options.access_key_id,
        aws_secret_access_key=s3.options.secret_access_key,
        region_name=s3.options.region,
    ).put_bucket_policy(
        Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [read]})
    )


async def test_file_and_rendition_urls_are_the_buckets_own(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    image_server: ImageServer,
    settings: Settings,
) -> None:
    original = samples.jpeg(600, 400)
    url = image_server.add("a.jpg", original)
    job = await sync_images(client, headers, [{"url": url, "sort": 1}])
    assert job["status"] == "succeeded", job
    (image,) = await renditions_settled(client, headers)
    sha = image["sha256"]
    public = settings.public_base_url
    assert image["file_url"] == f"{public}/{sha[:2]}/{sha[2:4]}/{sha}"
    (rendition,) = image["renditions"]
    assert rendition["state"] == "ready"
    assert rendition["url"] == f"{public}/renditions/{sha[:2]}/{sha[2:4]}/{sha}/200.webp"
    async with httpx.AsyncClient() as direct:  # the bucket itself, as a browser would
        file = await direct.get(image["file_url"])
        small = await direct.get(rendition["url"])
    assert file.status_code == 200
    assert file.content == original
    assert file.headers["content-type"] == "image/jpeg"
    assert file.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert small.status_code == 200
    assert small.headers["content-type"] == "image/webp"
    assert small.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert len(small.content) == rendition["size"]


@pytest.mark.parametrize(
    ("storage", "public", "message"),
    [
        ("./files", "https://cdn.example.com", "needs IMAGESYNC_STORAGE_URL=s3://"),
        ("s3://bucket", "cdn.example.com", "must be an http:// or https:// URL"),
        ("s3://bucket", "ftp://cdn.example.com", "must be an http:// or https:// URL"),
    ],
)
def test_a_public_base_url_needs_a_bucket_and_an_http_url(
    storage: str, public: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(storage_url=storage, public_base_url=public)
