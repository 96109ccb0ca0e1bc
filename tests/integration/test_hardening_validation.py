"""Input validation over HTTP: every bad input gets its status and error code, nothing is half-written,
and no input makes a 5xx (hypothesis drives the item payloads). The URL guard's and the item model's own
property tests run without an app, in tests/unit.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis.provisional import urls

from app.core.errors import ImageFetchFailed, UrlNotAllowed
from app.encode.encoder import OnnxImageEncoder
from app.ingest.fetch import ImageFetcher
from tests.factories import photo
from tests.hardening import assert_error, open_app
from tests.strategies import FAST, PHOTO, payloads

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path, tiny_encoder: OnnxImageEncoder
) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("validation")
    with open_app(
        tmp, tiny_model_path, tiny_encoder, "edge", fetch_max_bytes=200_000, request_max_bytes=1_000_000
    ) as c:
        yield c


def raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def item_json(**fields: Any) -> str:
    return json.dumps({"item_id": "v-1", "image_base64": PHOTO, **fields})


# ---- the table --------------------------------------------------------------------------------------

BAD_JSON_BODIES: list[tuple[str, str, bytes, int, str]] = [
    (
        "/items",
        "post",
        b'{"item_id": "v-1", "image_base64": "AA==", "price": 1' + b"0" * 5000 + b"}",
        400,
        "bad_request",
    ),
    ("/items", "post", b"[" * 100_000 + b"]" * 100_000, 400, "bad_request"),
    ("/items/batch", "post", b'{"items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "bad_request"),
    ("/items/v-0", "patch", b'{"title": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "bad_request"),
    ("/items", "post", b'\xff\xfe{"item_id": "v-1"}', 400, "bad_request"),
    ("/items", "post", b"", 400, "bad_request"),
    ("/items", "post", raw(item_json(title="\ud800")), 422, "validation_error"),
    ("/items", "post", raw(item_json(category="bags\udfff")), 422, "validation_error"),
    ("/items", "post", raw(item_json(seller_id="\udc80")), 422, "validation_error"),
    ("/items", "post", raw(item_json(attributes={"\ud800": "x"})), 422, "validation_error"),
    ("/items", "post", raw(item_json(attributes={"colour": "\ud800"})), 422, "validation_error"),
    ("/items", "post", raw(item_json()).replace(b'"v-1"', b'"v-1", "price": NaN'), 422, "validation_error"),
    ("/items", "post", raw(item_json()).replace(b'"v-1"', b'"v-1", "price": Infinity'), 422, "validation_error"),
    ("/items", "post", raw(item_json(attributes={"a": [1, 2]})), 422, "validation_error"),
    ("/items", "post", raw(item_json(attributes={"a": None})), 422, "validation_error"),
    ("/items", "post", raw(item_json(attributes={f"k{i}": i for i in range(65)})), 422, "validation_error"),
    ("/items", "post", raw(item_json(attributes={"k" * 65: 1})), 422, "validation_error"),
    ("/items", "post", raw(item_json(attributes={"k": "v" * 513})), 422, "validation_error"),
    ("/items", "post", raw(item_json(attributes=[["k", "v"]])), 422, "validation_error"),
    ("/items", "post", raw(item_json(title="t" * 513)), 422, "validation_error"),
    ("/items", "post", raw(item_json(category="")), 422, "validation_error"),
    ("/items", "post", raw(item_json(price="cheap")), 422, "validation_error"),
    ("/items", "post", raw(item_json(price=True)).replace(b"true", b"[1]"), 422, "validation_error"),
    ("/items", "post", raw(item_json(status=None)), 422, "validation_error"),
    ("/items", "post", raw(json.dumps({"item_id": "x" * 129, "image_base64": PHOTO})), 422, "validation_error"),
    ("/items", "post", raw(json.dumps({"item_id": "ünïcode", "image_base64": PHOTO})), 422, "validation_error"),
    ("/items", "post", raw(json.dumps({"item_id": "a/b", "image_base64": PHOTO})), 422, "validation_error"),
    ("/items", "post", raw(json.dumps({"item_id": 12, "image_base64": PHOTO})), 422, "validation_error"),
    ("/items", "post", raw(json.dumps({"item_id": "v-1", "image_url": ""})), 422, "validation_error"),
    (
        "/items",
        "post",
        raw(json.dumps({"item_id": "v-1", "image_url": "http://a/" + "x" * 2048})),
        422,
        "validation_error",
    ),
    (
        "/items",
        "post",
        raw(json.dumps({"item_id": "v-1", "image_url": None, "image_base64": None})),
        422,
        "validation_error",
    ),
    ("/items", "post", raw(json.dumps({"item_id": "v-1", "image_base64": "A" * 300_000})), 413, "image_too_large"),
    ("/items", "post", b'"just a string"', 422, "validation_error"),
    ("/items", "post", b"null", 422, "validation_error"),
    ("/items/batch", "post", b'{"items": {"item_id": "v-1"}}', 422, "validation_error"),
    ("/items/batch", "post", b'{"items": null}', 422, "validation_error"),
    ("/items/v-0", "patch", raw(json.dumps({"title": "\ud800"})), 422, "validation_error"),
    ("/items/v-0", "patch", raw(json.dumps({"item_id": "other"})), 422, "validation_error"),
    ("/items/v-0", "patch", raw(json.dumps({"price": -0.01})), 422, "validation_error"),
    ("/items/v-0", "patch", b"[]", 422, "validation_error"),
]


@pytest.mark.parametrize(("path", "method", "body", "status", "code"), BAD_JSON_BODIES)
def test_bad_json_body(api: TestClient, path: str, method: str, body: bytes, status: int, code: str) -> None:
    api.post("/items", json={"item_id": "v-0", "image_base64": PHOTO, "title": "before"})
    response = api.request(method.upper(), path, content=body, headers=JSON)
    assert_error(response, status, code)
    assert api.get("/items/v-1").status_code == 404
    assert api.get("/items/v-0").json()["title"] == "before"
    assert api.get("/readyz").status_code == 200


def test_chunked_body_over_the_cap_is_413_before_parsing(api: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap must hold while the body streams
        yield b'{"item_id": "v-1", "image_base64": "'
        for _ in range(40):
            yield b"A" * 65_536
        yield b'"}'

    assert_error(api.post("/items", content=chunks(), headers=JSON), 413, "payload_too_large")
    assert api.get("/items/v-1").status_code == 404


def test_data_url_base64_is_accepted(api: TestClient) -> None:
    response = api.post("/items", json={"item_id": "v-data", "image_base64": "data:image/jpeg;base64," + PHOTO})
    assert response.status_code == 201, response.text


def test_batch_item_that_is_not_an_object_fails_alone(api: TestClient) -> None:
    items = [
        1,
        "x",
        None,
        [],
        {"item_id": "vb-ok", "image_base64": PHOTO},
        {"item_id": "vb-bad", "image_url": "ftp://x/y"},
    ]
    results = api.post("/items/batch", json={"items": items}).json()["results"]
    assert [(r["status"], r["error"] and r["error"]["code"]) for r in results] == [
        (422, "validation_error"),
        (422, "validation_error"),
        (422, "validation_error"),
        (422, "validation_error"),
        (201, None),
        (422, "url_not_allowed"),
    ]
    assert api.get("/items/vb-bad").status_code == 404


# ---- multipart edge cases -----------------------------------------------------------------------------

JPEG = photo(5, size=64)
MULTIPART: list[tuple[str, dict[str, Any], int, str]] = [
    (
        "no boundary",
        {"content": b"--x\r\n\r\n", "headers": {"content-type": "multipart/form-data"}},
        400,
        "bad_request",
    ),
    (
        "garbage",
        {"content": b"garbage", "headers": {"content-type": "multipart/form-data; boundary=x"}},
        400,
        "bad_request",
    ),
    (
        "unterminated part",
        {
            "content": b'--x\r\nContent-Disposition: form-data; name="item_id"\r\n\r\nvm-1',
            "headers": {"content-type": "multipart/form-data; boundary=x"},
        },
        400,
        "bad_request",
    ),
    (
        "more files than MAX_PHOTOS + 1",  # up to MAX_PHOTOS files are a listing's photos, one more: too_many_photos
        {"data": {"item_id": "vm-1"}, "files": [("image", (f"{i}.jpg", JPEG)) for i in range(14)]},
        400,
        "bad_request",
    ),
    (
        "too many fields",
        {"data": {"item_id": "vm-1", **{f"f{i}": "x" for i in range(20)}}, "files": {"image": ("a.jpg", JPEG)}},
        400,
        "bad_request",
    ),
    ("no image field", {"data": {"item_id": "vm-1"}, "files": {"photo": ("a.jpg", JPEG)}}, 422, "validation_error"),
    (
        "image as text",
        {"data": {"item_id": "vm-1"}, "files": {"image": (None, b"not a file")}},
        422,
        "validation_error",
    ),
    ("no item_id", {"data": {"title": "t"}, "files": {"image": ("a.jpg", JPEG)}}, 422, "validation_error"),
    ("bad item_id", {"data": {"item_id": "vm 1"}, "files": {"image": ("a.jpg", JPEG)}}, 422, "validation_error"),
    (
        "image_url field",
        {"data": {"item_id": "vm-1", "image_url": "http://x"}, "files": {"image": ("a.jpg", JPEG)}},
        422,
        "validation_error",
    ),
    (
        "attributes not JSON",
        {"data": {"item_id": "vm-1", "attributes": "{nope"}, "files": {"image": ("a.jpg", JPEG)}},
        422,
        "validation_error",
    ),
    (
        "attributes deep",
        {"data": {"item_id": "vm-1", "attributes": "[" * 100_000}, "files": {"image": ("a.jpg", JPEG)}},
        422,
        "validation_error",
    ),
    (
        "attributes list",
        {"data": {"item_id": "vm-1", "attributes": "[1]"}, "files": {"image": ("a.jpg", JPEG)}},
        422,
        "validation_error",
    ),
    (
        "negative price",
        {"data": {"item_id": "vm-1", "price": "-1"}, "files": {"image": ("a.jpg", JPEG)}},
        422,
        "validation_error",
    ),
    ("empty file", {"data": {"item_id": "vm-1"}, "files": {"image": ("a.jpg", b"")}}, 415, "unsupported_image_type"),
    (
        "file over FETCH_MAX_BYTES",
        {"data": {"item_id": "vm-1"}, "files": {"image": ("a.jpg", JPEG + b"\0" * 200_000)}},
        413,
        "image_too_large",
    ),
    (
        "file over REQUEST_MAX_BYTES",
        {"data": {"item_id": "vm-1"}, "files": {"image": ("a.jpg", b"\0" * 1_100_000)}},
        413,
        "payload_too_large",
    ),
]


@pytest.mark.parametrize(("case", "kwargs", "status", "code"), MULTIPART, ids=[m[0] for m in MULTIPART])
def test_multipart_edge_case(api: TestClient, case: str, kwargs: dict[str, Any], status: int, code: str) -> None:
    assert_error(api.post("/items", **kwargs), status, code)
    assert api.get("/items/vm-1").status_code == 404
    assert api.get("/readyz").status_code == 200


# ---- API key on every write route -----------------------------------------------------------------------


def test_api_key_guards_every_write_route(client_factory) -> None:
    with client_factory(api_key="s3cret-key") as client:
        good = {"Authorization": "Bearer s3cret-key"}
        assert client.post("/items", json={"item_id": "k-0", "image_base64": PHOTO}, headers=good).status_code == 201
        writes = [
            ("POST", "/items", {"json": {"item_id": "k-1", "image_base64": PHOTO}}),
            ("POST", "/items", {"data": {"item_id": "k-1"}, "files": {"image": ("a.jpg", JPEG)}}),
            ("POST", "/items/batch", {"json": {"items": [{"item_id": "k-1", "image_base64": PHOTO}]}}),
            ("PATCH", "/items/k-0", {"json": {"title": "changed"}}),
            ("DELETE", "/items/k-0", {}),
        ]
        bad_headers = [
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "s3cret-key"},
            {"Authorization": "Basic s3cret-key"},
        ]
        for method, path, kwargs in writes:
            for headers in bad_headers:
                assert_error(client.request(method, path, headers=headers, **kwargs), 401, "unauthorized")
        assert client.get("/items/k-1").status_code == 404
        assert client.get("/items/k-0").json().get("title") is None  # the PATCH never happened
        # reads stay open; the scheme name is case-insensitive (RFC 9110)
        assert client.get("/similar/k-0").status_code == 200
        assert (
            client.patch("/items/k-0", json={"title": "ok"}, headers={"Authorization": "bearer s3cret-key"}).status_code
            == 200
        )
        assert client.delete("/items/k-0", headers=good).status_code == 204


@settings(FAST, max_examples=60)
@given(url=urls())
def test_any_public_looking_url_fails_as_a_typed_error(url: str) -> None:
    """No name resolves here (no internet): whatever the URL, the answer is a typed fetch error."""

    async def attempt() -> None:
        fetcher = ImageFetcher(timeout_s=2, max_bytes=10_000, allow_private=False)
        try:
            await fetcher.fetch(url)
        finally:
            await fetcher.aclose()

    with pytest.raises((UrlNotAllowed, ImageFetchFailed)):
        asyncio.run(attempt())


@settings(FAST, max_examples=80)
@given(body=payloads)
def test_item_payloads_over_http_never_5xx_and_never_half_write(api: TestClient, body: dict[str, Any]) -> None:
    item_id = body.get("item_id")
    path = f"/items/{quote(item_id, safe='')}" if isinstance(item_id, str) else None
    fresh = path is not None and api.get(path).status_code == 404
    response = api.post("/items", content=json.dumps(body), headers=JSON)  # NaN and Infinity included
    assert response.status_code < 500, response.text
    stored = fresh and api.get(path).status_code == 200  # type: ignore[arg-type]
    if response.status_code in (200, 201):
        assert api.get(path).status_code == 200  # type: ignore[arg-type]
    else:
        assert response.json()["error"]["code"]
        assert not stored
