"""Signed webhooks: registering an endpoint (checked as image URLs are), its calls when a
job ends and when a product fails, signed as Standard Webhooks says, retried after an
error answer, and the endpoint disabled when a delivery gives up. A real receiver on
127.0.0.1 takes the calls; the queue's real runner makes them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagesync.client import AsyncClient, InvalidSignature, verify_webhook
from imagesync.kit.db import session_scope, utcnow
from imagesync.kit.settings import Settings
from imagesync.queue import Attempt
from imagesync.runtime import resources, tasks
from imagesync.sync.models import WebhookDelivery
from imagesync.sync.schemas import SyncJobRead
from imagesync.sync.webhooks.schemas import JobFinished, ProductFailed
from imagesync.sync.webhooks.signing import new_secret
from tests.factories import create_account, pointers
from tests.served import clean_env, create_token, serve
from tests.sync.conftest import ImageServer, server_settings

SYNC = "/products/images/sync"
BOTH = ["sync.job.finished", "sync.product.failed"]


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """Endpoints by their path: `ok` answers 204, `flaky` 500 to the first call of each
    delivery and then 200, `down` always 500, `moved` a redirect to `ok`."""

    base: str = ""
    calls: list[Call] = field(default_factory=list)
    seen: Counter[tuple[str, str]] = field(default_factory=Counter)

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    def to(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path == path]

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        call = Call(path, dict(request.headers), await request.read())
        self.calls.append(call)
        self.seen[(path, call.headers.get("webhook-id", ""))] += 1
        if path == "flaky" and self.seen[(path, call.headers.get("webhook-id", ""))] == 1:
            return web.Response(status=500, text="not now")
        if path == "down":
            return web.Response(status=500, text="down for maintenance")
        if path == "moved":
            return web.Response(status=302, headers={"Location": "/ok"})
        return web.Response(status=204 if path == "ok" else 200)

    async def wait_for(self, path: str, calls: int, *, seconds: float = 30) -> list[Call]:
        for _ in range(int(seconds * 20)):
            if len(self.to(path)) >= calls:
                await asyncio.sleep(0.3)  # and nothing more comes meanwhile
                return self.to(path)
            await asyncio.sleep(0.05)
        pytest.fail(f"{path} got {len(self.to(path))} calls of {calls}: {self.calls}")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    holder = Receiver()
    app = web.Application()
    app.router.add_post("/{path:.*}", holder.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    holder.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield holder
    await runner.cleanup()


def port_of(base: str) -> str:
    return base.rsplit(":", 1)[1]


@pytest.fixture
def settings(
    database_url: str, tmp_path: Path, image_server: ImageServer, receiver: Receiver
) -> Settings:
    allow = f"127.0.0.1:{port_of(image_server.base)},127.0.0.1:{port_of(receiver.base)}"
    return server_settings(
        database_url,
        tmp_path,
        image_server,
        fetch_allow=allow,
        fetch_retries=0,
        webhook_retry_seconds="0.2,0.2",
    )


async def register(
    client: httpx.AsyncClient, headers: dict[str, str], url: str, events: list[str] = BOTH
) -> dict[str, Any]:
    answer = await client.post("/webhooks", headers=headers, json={"url": url, "events": events})
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


async def deliveries(
    client: httpx.AsyncClient, headers: dict[str, str], webhook_id: str
) -> list[dict[str, Any]]:
    answer = await client.get(f"/webhooks/{webhook_id}/deliveries", headers=headers)
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["deliveries"]
    return found


async def settled(
    client: httpx.AsyncClient, headers: dict[str, str], webhook_id: str, count: int
) -> list[dict[str, Any]]:
    """The endpoint's deliveries once `count` of them are no longer pending."""
    for _ in range(600):
        found = await deliveries(client, headers, webhook_id)
        if sum(d["status"] != "pending" for d in found) >= count:
            return found
        await asyncio.sleep(0.05)
    pytest.fail(f"deliveries did not settle: {found}")


def two_products(image_server: ImageServer) -> dict[str, Any]:
    """One product whose image downloads, one whose image is not there (it fails)."""
    return {
        "products": [
            {"item_number": "p-ok", "images": [{"url": image_server.add("a.jpg"), "sort": 1}]},
            {"item_number": "p-bad", "images": [{"url": image_server.url("gone.jpg"), "sort": 1}]},
        ]
    }


async def make_products(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    answer = await client.post(
        "/products/sync",
        headers=headers,
        json={"products": [{"item_number": n, "variants": []} for n in ("p-ok", "p-bad")]},
    )
    assert answer.status_code == 200, answer.text


# -- registering ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://10.0.0.1/hook", "address_refused"),
        ("http://169.254.169.254/latest", "address_refused"),
        ("http://[::1]:8080/hook", "address_refused"),
        ("http://127.0.0.1:9/hook", "address_refused"),  # loopback, not allowed
        ("http://hooks.example.com:22/hook", "port_refused"),
        ("ftp://hooks.example.com/hook", "invalid_url"),
        ("https://user:pw@hooks.example.com/hook", "invalid_url"),
    ],
)
async def test_an_endpoint_url_is_checked_as_image_urls_are(
    client: httpx.AsyncClient, headers: dict[str, str], url: str, code: str
) -> None:
    """Each refused before any connection or name look-up (the address or port is in the
    URL itself)."""
    answer = await client.post("/webhooks", headers=headers, json={"url": url, "events": BOTH})
    assert answer.status_code == 422, answer.text
    assert [e["code"] for e in answer.json()["errors"]] == [code]
    assert pointers(answer) == ["/url"]


@pytest.mark.parametrize(
    ("events", "pointer"),
    [([], "/events"), (["sync.job.started"], "/events/0"), ("sync.job.finished", "/events")],
)
async def test_events_are_the_known_ones(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    receiver: Receiver,
    events: Any,
    pointer: str,
) -> None:
    answer = await client.post(
        "/webhooks", headers=headers, json={"url": receiver.url("ok"), "events": events}
    )
    assert answer.status_code == 422, answer.text
    assert pointers(answer) == [pointer]


async def test_the_secret_is_shown_once_and_endpoints_are_the_accounts_own(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    receiver: Receiver,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    created = await register(client, headers, receiver.url("ok"), ["sync.job.finished"] * 2)
    assert created["secret"].startswith("whsec_")
    assert created["events"] == ["sync.job.finished"]  # each once
    assert created["enabled"] is True
    listed = (await client.get("/webhooks", headers=headers)).json()["webhooks"]
    assert [w["id"] for w in listed] == [created["id"]]
    assert "secret" not in listed[0]
    one = (await client.get(f"/webhooks/{created['id']}", headers=headers)).json()
    assert "secret" not in one

    other = await create_account(sessionmaker, "globex")
    assert (await client.get("/webhooks", headers=other)).json() == {"webhooks": []}
    for method, path, body in (
        ("GET", f"/webhooks/{created['id']}", None),
        ("PATCH", f"/webhooks/{created['id']}", {"enabled": False}),
        ("DELETE", f"/webhooks/{created['id']}", None),
        ("GET", f"/webhooks/{created['id']}/deliveries", None),
    ):
        answer = await client.request(method, path, headers=other, json=body)
        assert answer.status_code == 404, (method, path, answer.text)
    assert (await client.get(f"/webhooks/{created['id']}", headers=headers)).json()["enabled"]


async def test_an_account_has_at_most_ten_endpoints(
    client: httpx.AsyncClient, headers: dict[str, str], receiver: Receiver
) -> None:
    for n in range(10):
        await register(client, headers, receiver.url(f"ok?{n}"))
    answer = await client.post(
        "/webhooks", headers=headers, json={"url": receiver.url("ok"), "events": BOTH}
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["code"] == "too_many_webhooks"


# -- deliveries -----------------------------------------------------------------------------


async def test_a_job_end_and_a_failed_product_are_delivered_signed_and_retried(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    receiver: Receiver,
    image_server: ImageServer,
) -> None:
    hook = await register(client, headers, receiver.url("flaky"))
    await make_products(client, headers)
    answer = await client.post(f"{SYNC}?wait=20", headers=headers, json=two_products(image_server))
    assert answer.status_code == 200, answer.text
    job = SyncJobRead.model_validate(answer.json())
    assert job.status == "partially_failed"

    calls = await receiver.wait_for("flaky", 4)  # two events, each answered 500 once
    assert len(calls) == 4
    events = [verify_webhook(hook["secret"], c.headers, c.body) for c in calls]
    by_id: dict[str, list[Call]] = {}
    for call in calls:
        by_id.setdefault(call.headers["webhook-id"], []).append(call)
    assert sorted(len(v) for v in by_id.values()) == [2, 2]  # a retry keeps its id
    finished = [e for e in events if isinstance(e, JobFinished)]
    failed = [e for e in events if isinstance(e, ProductFailed)]
    assert len(finished) == 2
    assert len(failed) == 2
    # The body is the job as GET reads it.
    read = (await client.get(f"{SYNC}/{job.id}", headers=headers)).json()
    assert finished[0].data == SyncJobRead.model_validate(read)
    assert failed[0].data.job_id == job.id
    assert failed[0].data.product.item_number == "p-bad"
    assert failed[0].data.product.status == "failed"
    with pytest.raises(InvalidSignature):
        verify_webhook(new_secret(), calls[0].headers, calls[0].body)

    found = await settled(client, headers, hook["id"], 2)
    assert sorted(d["event"] for d in found) == sorted(BOTH)
    for delivery in found:
        assert delivery["status"] == "delivered"
        assert delivery["job_id"] == job.id
        assert [a["status"] for a in delivery["attempts"]] == [500, 200]
        assert delivery["attempts"][0]["error"] == "answered 500: not now"
        assert delivery["id"] in by_id


async def test_an_endpoint_that_keeps_failing_is_disabled_and_can_be_enabled_again(
    client: httpx.AsyncClient, headers: dict[str, str], receiver: Receiver
) -> None:
    hook = await register(client, headers, receiver.url("down"), ["sync.job.finished"])
    body = {"products": [{"item_number": "cool-product-001", "images": []}]}
    await client.post(f"{SYNC}?wait=20", headers=headers, json=body)
    found = await settled(client, headers, hook["id"], 1)
    assert found[0]["status"] == "failed"
    assert found[0]["reason"] == "no 2xx answer in 3 attempts"
    assert len(found[0]["attempts"]) == 3  # the first call and the two retries
    assert found[0]["attempts"][0]["error"] == "answered 500: down for maintenance"
    assert {a["status"] for a in found[0]["attempts"]} == {500}
    read = (await client.get(f"/webhooks/{hook['id']}", headers=headers)).json()
    assert read["enabled"] is False
    assert read["disabled_at"] is not None
    assert "still failed after 3 attempts" in read["disabled_reason"]

    # Disabled, it is not called; enabled again, it is.
    await client.post(f"{SYNC}?wait=20", headers=headers, json=body)
    await asyncio.sleep(0.5)
    assert len(await deliveries(client, headers, hook["id"])) == 1
    changed = await client.patch(f"/webhooks/{hook['id']}", headers=headers, json={"enabled": True})
    assert changed.json()["enabled"] is True
    assert changed.json()["disabled_reason"] is None
    await client.post(f"{SYNC}?wait=20", headers=headers, json=body)
    assert len(await deliveries(client, headers, hook["id"])) == 2


async def test_a_redirect_is_an_answer_not_followed(
    client: httpx.AsyncClient, headers: dict[str, str], receiver: Receiver
) -> None:
    hook = await register(client, headers, receiver.url("moved"), ["sync.job.finished"])
    body = {"products": [{"item_number": "cool-product-001", "images": []}]}
    await client.post(f"{SYNC}?wait=20", headers=headers, json=body)
    found = await settled(client, headers, hook["id"], 1)
    assert [a["status"] for a in found[0]["attempts"]] == [302, 302, 302]
    assert receiver.to("ok") == []


async def test_a_job_of_many_products_is_announced_once(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    receiver: Receiver,
    image_server: ImageServer,
) -> None:
    """Its products end side by side, each in its own transaction: one of them, the last,
    announces the job."""
    hook = await register(client, headers, receiver.url("ok"), ["sync.job.finished"])
    items = [f"p-{n}" for n in range(10)]
    await client.post(
        "/products/sync",
        headers=headers,
        json={"products": [{"item_number": n, "variants": []} for n in items]},
    )
    body: dict[str, Any] = {
        "products": [
            {"item_number": n, "images": [{"url": image_server.add(f"{n}.jpg"), "sort": 1}]}
            for n in items
        ]
    }
    for _ in range(3):
        answer = await client.post(f"{SYNC}?wait=20", headers=headers, json=body)
        assert answer.json()["status"] == "succeeded", answer.text
        for product in body["products"]:  # new images each time: each product downloads
            product["images"][0]["url"] += "?again"
    found = await settled(client, headers, hook["id"], 3)
    assert len(found) == 3
    assert len({d["job_id"] for d in found}) == 3


async def test_deleting_an_endpoint_drops_its_deliveries(
    client: httpx.AsyncClient, headers: dict[str, str], receiver: Receiver
) -> None:
    hook = await register(client, headers, receiver.url("down"), ["sync.job.finished"])
    body = {"products": [{"item_number": "cool-product-001", "images": []}]}
    await client.post(f"{SYNC}?wait=20", headers=headers, json=body)
    await receiver.wait_for("down", 1)
    deleted = await client.delete(f"/webhooks/{hook['id']}", headers=headers)
    assert deleted.status_code == 204
    assert (await client.get(f"/webhooks/{hook['id']}", headers=headers)).status_code == 404
    calls = len(receiver.to("down"))
    await asyncio.sleep(0.8)  # past the retries it would have had
    assert len(receiver.to("down")) == calls


# -- against a real `serve` -----------------------------------------------------------------


@pytest.mark.slow
async def test_a_served_job_is_delivered_and_retried(
    tmp_path: Path,
    database_env: dict[str, str],
    image_server: ImageServer,
    receiver: Receiver,
) -> None:
    """A real `serve` and its own runner of the queue (the local one on SQLite,
    procrastinate on PostgreSQL): the receiver verifies each call with
    `imagesync.client.verify_webhook`, and sees the retry after it answered 500."""
    allow = f"127.0.0.1:{port_of(image_server.base)},127.0.0.1:{port_of(receiver.base)}"
    env = {
        **clean_env(),
        **database_env,
        "IMAGESYNC_FETCH_ALLOW": allow,
        "IMAGESYNC_FETCH_RETRIES": "0",
        "IMAGESYNC_WEBHOOK_RETRY_SECONDS": "1,1",
        "IMAGESYNC_STORAGE_URL": str(tmp_path / "files"),
    }
    subprocess.run(
        [sys.executable, "-m", "imagesync", "migrate"], cwd=tmp_path, env=env, check=True
    )
    token = create_token(tmp_path, env)
    with serve(tmp_path, env) as base:
        async with AsyncClient(base, token) as api:
            hook = await api.create_webhook(receiver.url("flaky"), BOTH)
            down = await api.create_webhook(receiver.url("down"), ["sync.job.finished"])
            await api.sync_products([{"item_number": n, "variants": []} for n in ("p-ok", "p-bad")])
            job = await api.sync_images(two_products(image_server)["products"], wait=20)
            assert job.status == "partially_failed"
            calls = await receiver.wait_for("flaky", 4)
            events = [verify_webhook(hook.secret, c.headers, c.body) for c in calls]
            finished = [e for e in events if isinstance(e, JobFinished)]
            assert [e.data for e in finished] == [await api.get_job(job.id)] * 2
            assert {e.data.product.item_number for e in events if isinstance(e, ProductFailed)} == {
                "p-bad"
            }
            await receiver.wait_for("down", 3)
            for _ in range(100):
                page = await api.webhook_deliveries(hook.id)
                if all(d.status != "pending" for d in page.deliveries):
                    break
                await asyncio.sleep(0.1)
            assert [[a.status for a in d.attempts] for d in page.deliveries] == [[500, 200]] * 2
            async with httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {token}"}
            ) as http:
                for _ in range(100):
                    read = (await http.get(f"/webhooks/{down.id}")).json()
                    if not read["enabled"]:
                        break
                    await asyncio.sleep(0.1)
                assert read["enabled"] is False, read


async def test_ended_deliveries_past_their_lifetime_are_forgotten_daily(
    app: Any,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    receiver: Receiver,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Delivered and failed ones older than IMAGESYNC_WEBHOOK_DELIVERY_DAYS (30) go; a
    pending one, however old, stays."""
    hook = await register(client, headers, receiver.url("ok"), ["sync.job.finished"])
    body = {"products": [{"item_number": "cool-product-001", "images": []}]}
    for _ in range(3):
        await client.post(f"{SYNC}?wait=20", headers=headers, json=body)
    found = await settled(client, headers, hook["id"], 3)
    old, kept, pending = (d["id"] for d in found)
    async with session_scope(sessionmaker) as session:
        month_ago = utcnow() - timedelta(days=30, minutes=1)
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_([old, pending]))
            .values(created_at=month_ago)
        )
        await session.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == pending).values(status="pending")
        )
    task = tasks().by_name["maintenance.forget_webhook_deliveries"]
    assert task.cron == "47 4 * * *"
    await task.function(Attempt(1, 1, resources(app.state.sync_context, app.state.settings)))
    left = {d["id"] for d in await deliveries(client, headers, hook["id"])}
    assert left == {kept, pending}
