"""Body problems get one scheme, in TRAEDE's error shape: not JSON by its content type is
415, bytes that are not UTF-8 JSON are 400 `invalid_json` saying where, a body over the
limit is 413 however it is sent; only a parsed body is validated (422)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from imagesync.kit.body import parse_json, where
from imagesync.kit.errors import InvalidJson
from imagesync.kit.routes import StrictRoute
from imagesync.sync.schemas import ImageSyncRequest

PATH = "/products/images/sync"
VALID = b'{"products": [{"item_number": "p-1", "images": []}]}'


def only_error(response: httpx.Response) -> dict[str, object]:
    errors = response.json()["errors"]
    assert len(errors) == 1, errors
    error: dict[str, object] = errors[0]
    assert error["status"] == response.status_code
    return error


async def post(
    client: httpx.AsyncClient, headers: dict[str, str], body: bytes, content_type: str | None
) -> httpx.Response:
    sent = dict(headers)
    if content_type is not None:
        sent["Content-Type"] = content_type
    return await client.post(PATH, content=body, headers=sent)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"products": [}', "Expecting value at line 1, column 15"),
        (b'{\n  "products": [\n    {"item_number": "p-1",}\n  ]\n}', "line 3, column 27"),
        (b"", "Expecting value at line 1, column 1"),
        (b'{"products": "bl\xe5b\xe6r"}', "not UTF-8 text: byte 0xe5 at line 1, column 17"),
        (b'{\n"alt": "\xc3\xa6\xff"}', "byte 0xff at line 2, column 10"),
    ],
)
async def test_bytes_that_are_not_utf8_json_are_400_saying_where(
    client: httpx.AsyncClient, headers: dict[str, str], body: bytes, detail: str
) -> None:
    response = await post(client, headers, body, "application/json")
    assert response.status_code == 400, response.text
    error = only_error(response)
    assert error["code"] == "invalid_json"
    assert detail in str(error["detail"])


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
async def test_a_body_not_sent_as_json_is_415_naming_the_type(
    client: httpx.AsyncClient, headers: dict[str, str], content_type: str | None
) -> None:
    response = await post(client, headers, VALID, content_type)
    assert response.status_code == 415, response.text
    error = only_error(response)
    assert error["code"] == "unsupported_media_type"
    assert "application/json" in str(error["detail"])


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/vnd.api+json"],
)
async def test_json_content_types_are_accepted(
    client: httpx.AsyncClient, headers: dict[str, str], content_type: str
) -> None:
    response = await post(client, headers, VALID, content_type)
    assert response.status_code == 200, response.text


async def test_a_byte_order_mark_is_tolerated(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await post(client, headers, b"\xef\xbb\xbf" + VALID, "application/json")
    assert response.status_code == 200, response.text


async def test_a_body_over_the_limit_is_413_even_without_a_content_length(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # sent chunked: no Content-Length
        yield b'{"products": [{"item_number": "p-1", "images": [], "x": "'
        for _ in range(48):
            yield b"x" * 65536
        yield b'"}]}'

    sent = headers | {"Content-Type": "application/json"}
    response = await client.post(PATH, content=chunks(), headers=sent)
    assert response.status_code == 413, response.text
    assert only_error(response)["code"] == "payload_too_large"


def test_where_counts_lines_and_characters_from_one() -> None:
    data = '{\n  "ø": x'.encode()
    assert where(data, data.index(b"x")) == "line 2, column 8"
    assert where(b"", 0) == "line 1, column 1"
    with pytest.raises(InvalidJson):
        parse_json(b"\xff")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 1000, id="1000-open-brackets"),  # was a 500 (RecursionError)
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="100000-deep-array"),
        pytest.param(b'{"a":' * 5000 + b"1" + b"}" * 5000, id="5000-deep-object"),
        pytest.param(
            b'{"products": [{"item_number": "p", "images": [], "x": '
            + b"[" * 40
            + b"]" * 40
            + b"}]}",
            id="valid-json-nested-40-deep",
        ),
    ],
)
async def test_a_body_nested_too_deep_is_400_at_any_depth(
    client: httpx.AsyncClient, headers: dict[str, str], body: bytes
) -> None:
    response = await post(client, headers, body, "application/json")
    assert response.status_code == 400, response.text
    error = only_error(response)
    assert error["code"] == "invalid_json"
    assert "nested more than 32 levels" in str(error["detail"]) or "not valid JSON" in str(
        error["detail"]
    )


def test_the_depth_cap_lets_every_real_request_through() -> None:
    value = parse_json(b"[" * 32 + b"]" * 32)
    for _ in range(31):
        (value,) = value
    assert value == []
    with pytest.raises(InvalidJson, match="nested more than 32"):
        parse_json(b"[" * 33 + b"]" * 33)


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer   "],
)
async def test_without_a_token_the_body_is_not_read(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    # Not JSON at all: read, it would be a 400; unread, the missing token is the answer.
    sent = {"Content-Type": "application/json"}
    if authorization is not None:
        sent["Authorization"] = authorization
    response = await client.post(PATH, content=b"[" * 1000, headers=sent)
    assert response.status_code == 401, response.text
    assert only_error(response)["code"] == "unauthorized"


# -- a body model read straight from its bytes -------------------------------------------

_ODD = (
    st.none()
    | st.booleans()
    | st.integers(-(2**33), 2**33)
    | st.floats(allow_nan=False)
    | st.text(
        st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from("\x00é"),
        max_size=4,
    )
)


def _mostly(valid: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Mostly what the model takes, now and then what it does not."""
    return st.integers(0, 9).flatmap(lambda draw: _ODD if draw == 0 else valid)


_TEXT = _mostly(st.text("abcé-_ 1", min_size=1, max_size=8))
_NUMBER = _mostly(st.integers(-5, 5) | st.sampled_from([1.0, "3", True]))
_FLAG = _mostly(st.booleans() | st.sampled_from(["true", 0, "no"]))
_URL = st.integers(0, 9).flatmap(
    lambda draw: (
        st.sampled_from(["ftp://x/y", "http://", "a b"])
        if draw == 0
        else st.sampled_from(["http://127.0.0.1:8/a.jpg", "https://example.test/b.png"])
    )
)
_IMAGE = st.fixed_dictionaries(
    {"url": _URL, "sort": _NUMBER},
    optional={
        "sort_b2c": _NUMBER,
        "existance_key": _TEXT,
        "alt": _TEXT,
        "filename": _TEXT,
        "refresh": _FLAG,
        "skip_if_no_variant_matches_attribute_code": _FLAG,
        "attach_to_variants_matching_attribute_code": _mostly(
            st.dictionaries(_TEXT, _TEXT, max_size=2)
        ),
    },
)
_PRODUCT = st.fixed_dictionaries(
    {"item_number": _TEXT, "images": _mostly(st.lists(_IMAGE, max_size=3))},
    optional={"use_sort_b2c": _FLAG},
)
_BODY = _mostly(
    st.tuples(
        st.sampled_from(["products", "product_images"]), _mostly(st.lists(_PRODUCT, max_size=3))
    ).map(lambda pair: dict([pair]))
)
_ESCAPED = st.sampled_from(
    [
        '"http://127.0.0.1:8/a.jpg", "existance_key": "k", "existence_key": "k"',
        '"\\ud800"',
        '"\\u0000"',
        '"\\udfff x"',
        "1.0",
        "1e0",
        "NaN",
        '"1"',
    ]
)


def _route() -> StrictRoute:
    async def endpoint(body: ImageSyncRequest) -> None: ...

    return StrictRoute("/sync", endpoint, methods=["POST"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_BODY, swap=st.none() | _ESCAPED)
def test_a_body_read_from_its_bytes_is_what_json_then_validation_made_of_it(
    body: dict[str, object], swap: str | None
) -> None:
    """Read in pydantic's parser, a body is the model the two steps made of it (JSON, then
    validation), and what they refuse is refused: handed on as parsed JSON, or
    `InvalidJson`, for FastAPI's own errors. What only a lax reading takes (`1.0` or
    `"1"` for an integer) is refused for the values of another JSON type, and only for
    those."""
    data = json.dumps(body)
    if swap is not None:  # a value JSON spells in more than one way, or not at all
        data = data.replace('"http://127.0.0.1:8/a.jpg"', swap, 1).replace("1,", swap + ",", 1)
    raw = data.encode()
    route = _route()
    try:
        expected: object = ImageSyncRequest.model_validate(parse_json(raw))
    except (ValidationError, InvalidJson) as refused:
        expected = type(refused)
    try:
        got: object = route.read_body(raw)
    except InvalidJson:
        got = InvalidJson
    except RequestValidationError as strictly:
        got = strictly.errors()
    if isinstance(got, list):  # refused for values of another JSON type than documented
        assert isinstance(expected, ImageSyncRequest)  # a lax reading took it
        assert got
        assert {e["type"] for e in got} <= {"int_type", "bool_type"}
        return
    if isinstance(got, ImageSyncRequest):
        assert got == expected
    elif expected is InvalidJson:
        assert got is InvalidJson
    else:  # parsed, for FastAPI to refuse
        assert expected is ValidationError
        assert got == parse_json(raw)


def test_a_body_model_is_read_only_where_it_is_the_whole_body() -> None:
    async def embedded(one: ImageSyncRequest, two: ImageSyncRequest) -> None: ...

    async def plain(body: dict[str, int]) -> None: ...

    assert _route().body_model is ImageSyncRequest
    assert StrictRoute("/e", embedded, methods=["POST"]).body_model is None
    assert StrictRoute("/p", plain, methods=["POST"]).body_model is None


@pytest.mark.parametrize(
    ("image", "pointer"),
    [
        pytest.param({"sort": True}, "/products/0/images/0/sort", id="true-for-an-integer"),
        pytest.param({"sort": "1"}, "/products/0/images/0/sort", id="text-for-an-integer"),
        pytest.param({"sort": 1.0}, "/products/0/images/0/sort", id="a-fraction-for-an-integer"),
        pytest.param({"sort": 1, "refresh": 0}, "/products/0/images/0/refresh", id="0-for-a-flag"),
        pytest.param(
            {"sort": 1, "refresh": "no"}, "/products/0/images/0/refresh", id="text-for-a-flag"
        ),
    ],
)
async def test_a_value_of_another_json_type_than_documented_is_422_where_it_is(
    client: httpx.AsyncClient, headers: dict[str, str], image: dict[str, object], pointer: str
) -> None:
    """The schema gives each value its JSON type; pydantic's lax mode would take these (a
    fuzzer sent `"delete": 0.0` for a boolean and was answered 200)."""
    body = {
        "products": [
            {"item_number": "p-1", "images": [{"url": "http://127.0.0.1:8/a.jpg", **image}]}
        ]
    }
    response = await post(client, headers, json.dumps(body).encode(), "application/json")
    assert response.status_code == 422, response.text
    assert [e["source"]["pointer"] for e in response.json()["errors"]] == [pointer]
