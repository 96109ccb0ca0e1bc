"""Safe decode over HTTP: the generated hostile corpus is refused with the right 4xx and stores nothing; odd
but valid images are accepted (their RGB colours, EXIF orientation and the pixel cap: tests/unit/test_decode.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.encode.encoder import OnnxImageEncoder
from tests.hardening import assert_error, b64, open_app
from tests.hostile_corpus import Hostile, hostile, odd_valid, png_zero_bomb

HOSTILE = {case.name: case for case in hostile()}
ODD = {case.name: case for case in odd_valid()}


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path, tiny_encoder: OnnxImageEncoder
) -> Iterator[TestClient]:
    # The embedded engine: it is the default store, and nothing may be half-written into it.
    with open_app(tmp_path_factory.mktemp("decode"), tiny_model_path, tiny_encoder, "edge") as client:
        yield client


def _refused_cleanly(api: TestClient, response: object, case: Hostile, item_id: str) -> None:
    assert_error(response, case.status, case.code)
    assert api.get(f"/items/{item_id}").status_code == 404
    assert api.get("/readyz").status_code == 200


@pytest.mark.parametrize("name", sorted(set(HOSTILE) - {"empty"}))  # "" is a validation error in JSON
def test_hostile_image_is_refused_as_json(api: TestClient, name: str) -> None:
    case = HOSTILE[name]
    item_id = f"hostile-json-{name}"
    response = api.post("/items", json={"item_id": item_id, "image_base64": b64(case.data)})
    _refused_cleanly(api, response, case, item_id)


@pytest.mark.parametrize(
    "name", ["empty", "png_bomb_1bit_12000x12000", "jpeg_header_65500x65500", "png_truncated", "svg"]
)
def test_hostile_image_is_refused_as_upload(api: TestClient, name: str) -> None:
    case = HOSTILE[name]
    item_id = f"hostile-upload-{name}"
    response = api.post("/items", data={"item_id": item_id}, files={"image": ("photo.jpg", case.data, "image/jpeg")})
    _refused_cleanly(api, response, case, item_id)


def test_hostile_images_in_a_batch_fail_alone(api: TestClient) -> None:
    names = ["png_bad_crc", "eps", "gif_screen_65535x65535"]
    items = [{"item_id": f"hb-{n}", "image_base64": b64(HOSTILE[n].data)} for n in names]
    items.append({"item_id": "hb-good", "image_base64": b64(ODD["png_rgb16"].data)})
    results = api.post("/items/batch", json={"items": items}).json()["results"]
    assert [(r["status"], r["error"] and r["error"]["code"]) for r in results] == [
        *((HOSTILE[n].status, HOSTILE[n].code) for n in names),
        (201, None),
    ]
    assert [api.get(f"/items/{i['item_id']}").status_code for i in items] == [404, 404, 404, 200]


@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_valid_image_is_accepted(api: TestClient, name: str) -> None:
    item_id = f"odd-{name}"
    response = api.post("/items", json={"item_id": item_id, "image_base64": b64(ODD[name].data)})
    assert response.status_code == 201, response.text
    assert api.get(f"/items/{item_id}").status_code == 200


def test_pillow_bomb_guard_still_applies_above_our_cap(client_factory) -> None:
    """Even with IMAGE_MAX_PIXELS raised past Pillow's limit, its DecompressionBombWarning is a 413."""
    with client_factory(image_max_pixels=1_000_000_000) as client:
        bomb = png_zero_bomb(10_000)  # 100 MP: over Pillow's 89.5 MP warning threshold
        response = client.post("/items", json={"item_id": "bomb", "image_base64": b64(bomb)})
        assert_error(response, 413, "image_too_large")
        assert client.get("/items/bomb").status_code == 404
