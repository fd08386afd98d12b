"""The order the API shows is the order that wins: of two syncs of one product sent at
the same moment, the one applied last has the later `created_at`."""

from __future__ import annotations

import asyncio
from datetime import datetime

import httpx

from tests.sync.conftest import ImageServer, images_of

ROUNDS = 15


async def test_of_two_concurrent_syncs_the_later_created_wins(
    client: httpx.AsyncClient, headers: dict[str, str], image_server: ImageServer
) -> None:
    async def post(url: str) -> dict[str, object]:
        body = {
            "products": [{"item_number": "cool-product-001", "images": [{"url": url, "sort": 1}]}]
        }
        response = await client.post("/products/images/sync?wait=20", json=body, headers=headers)
        assert response.status_code == 200, response.text
        job: dict[str, object] = response.json()
        return job

    for n in range(ROUNDS):
        urls = [image_server.add(f"{n}-{side}.jpg") for side in "ab"]
        jobs = await asyncio.gather(*(post(url) for url in urls))
        (image,) = await images_of(client, headers)
        winner = urls.index(image["url"])
        created = [datetime.fromisoformat(str(job["created_at"])) for job in jobs]
        assert created[winner] >= created[1 - winner], (n, jobs)
