"""Every error the API returns has TRAEDE's shape."""

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event, text

from imagesync.kit.deps import SessionDep
from imagesync.kit.errors import json_pointer


def assert_error_shape(body: dict[str, Any], status: int, code: str) -> None:
    assert list(body) == ["errors"]
    assert body["errors"], "at least one error"
    for error in body["errors"]:
        assert error["status"] == status
        assert error["code"] == code
        assert error["title"]
        assert error["detail"]


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


@given(st.lists(st.one_of(st.text(), st.integers(min_value=0)), max_size=6))
def test_json_pointer_round_trips(parts: list[str | int]) -> None:
    pointer = json_pointer(parts)
    tokens = pointer.split("/")[1:] if pointer else []
    assert [_unescape(t) for t in tokens] == [str(p) for p in parts]


async def test_unknown_route_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/thing")
    assert response.status_code == 404
    assert_error_shape(response.json(), 404, "not_found")
    assert "/no/such/thing" in response.json()["errors"][0]["detail"]


async def test_wrong_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.delete("/products/sync")
    assert response.status_code == 405
    assert_error_shape(response.json(), 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


async def test_unexpected_failure_is_500_in_shape(app: FastAPI, client: httpx.AsyncClient) -> None:
    async def boom() -> None:
        raise RuntimeError("secret internals")

    app.add_api_route("/boom", boom)
    response = await client.get("/boom")
    assert response.status_code == 500
    assert_error_shape(response.json(), 500, "internal_error")
    assert "secret internals" not in response.text


async def test_failed_commit_is_a_500_not_a_success(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The commit runs before the response is sent: a client never sees 200 for a
    transaction that did not commit."""

    async def writes(session: SessionDep) -> dict[str, str]:
        def refuse(_session: object) -> None:
            raise RuntimeError("disk full")

        event.listen(session.sync_session, "before_commit", refuse)
        await session.execute(text("SELECT 1"))
        return {"status": "written"}

    app.add_api_route("/writes", writes, methods=["POST"])
    response = await client.post("/writes")
    assert response.status_code == 500
    assert_error_shape(response.json(), 500, "internal_error")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/v10/healthz"])
async def test_health_needs_no_token(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_openapi_documents_the_routes(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert {"/products/sync", "/attributes/sync", "/products", "/products/{item_number}"} <= set(
        spec["paths"]
    )
    docs = await client.get("/docs")
    assert docs.status_code == 200
