"""POST /similar (search by photo): same answers as GET /similar, photo never stored, every error code."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.encode.encoder import OnnxImageEncoder
from tests.conftest import ClientFactory
from tests.factories import ImageServer, photo
from tests.hardening import assert_error, b64, open_app, wait_until

QUERY_SEED = 100
FILTERS: list[dict[str, Any]] = [
    {},
    {"include_sold": True},
    {"category": "bags"},
    {"min_price": 20, "max_price": 70},
    {"exclude_same_seller": True},
    {"category": "shoes", "include_sold": True, "exclude_same_seller": True, "max_price": 80},
]


def fill(client: TestClient) -> None:
    """12 items with varied metadata, and the query photo itself indexed as item `q` (seller s1)."""
    items = [
        {
            "item_id": f"it-{i}",
            "image_base64": b64(photo(i)),
            "title": f"thing {i}",
            "category": ("bags", "shoes")[i % 2],
            "price": float(10 * i),
            "seller_id": f"s{i % 3}",
            "status": "sold" if i % 5 == 0 else "on_sale",
        }
        for i in range(12)
    ]
    items.append({"item_id": "q", "image_base64": b64(photo(QUERY_SEED)), "category": "bags", "seller_id": "s1"})
    response = client.post("/items/batch", json={"items": items})
    assert [r["status"] for r in response.json()["results"]] == [201] * 13, response.text


def get_similar(client: TestClient, k: int, filters: dict[str, Any]) -> list[tuple[str, float]]:
    response = client.get("/similar/q", params={"k": k, **filters})
    assert response.status_code == 200, response.text
    return [(r["item_id"], r["score"]) for r in response.json()["results"]]


def by_photo(answer: Any, k: int) -> list[tuple[str, float]]:
    """POST /similar's results less the item `q` (the same photo: score ~1), cut to k."""
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"]
    assert set(body["results"][0]) == {
        "item_id",
        "score",
        "matched",
        "title",
        "category",
        "price",
        "seller_id",
        "status",
    }
    return [(r["item_id"], r["score"]) for r in body["results"] if r["item_id"] != "q"][:k]


def same(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> None:
    assert [i for i, _ in a] == [i for i, _ in b]
    assert np.allclose([s for _, s in a], [s for _, s in b], atol=1e-4)


def photo_filters(filters: dict[str, Any]) -> dict[str, Any]:
    # GET /similar takes the seller from the query item; a photo has none, so it is given
    return {**filters, "seller_id": "s1"} if filters.get("exclude_same_seller") else filters


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f) or "none")
def test_base64_search_answers_like_get_similar_of_the_same_image(client: TestClient, filters: dict[str, Any]) -> None:
    fill(client)
    expected = get_similar(client, 5, filters)
    assert expected
    body = {"image_base64": b64(photo(QUERY_SEED)), "k": 6, **photo_filters(filters)}
    same(by_photo(client.post("/similar", json=body), 5), expected)


def test_multipart_and_url_searches_answer_like_base64(client: TestClient, images: ImageServer) -> None:
    fill(client)
    before = client.app.state.services.items.store.count()  # type: ignore[attr-defined]
    filters = {"category": "shoes", "include_sold": True, "exclude_same_seller": True, "max_price": 80}
    expected = get_similar(client, 4, filters)
    form = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in photo_filters(filters).items()}
    upload = client.post(
        "/similar", data={"k": "5", **form}, files={"image": ("q.png", photo(QUERY_SEED), "image/jpeg")}
    )
    same(by_photo(upload, 4), expected)
    url = images.add("/q.jpg", photo(QUERY_SEED))
    from_url = client.post("/similar", json={"image_url": url, "k": 5, **photo_filters(filters)})
    same(by_photo(from_url, 4), expected)
    assert images.hits == ["/q.jpg"]
    # nothing was stored: same count, and the search photos are no items
    assert client.app.state.services.items.store.count() == before == 13  # type: ignore[attr-defined]
    listed = client.get("/items", params={"limit": 200}).json()["items"]
    assert sorted(i["item_id"] for i in listed) == sorted(["q", *(f"it-{i}" for i in range(12))])


def test_the_photo_itself_ranks_first_and_model_version_is_checked(client: TestClient) -> None:
    fill(client)
    served = client.get("/info").json()["model_version"]
    answer = client.post("/similar", json={"image_base64": b64(photo(QUERY_SEED)), "k": 3, "model_version": served})
    assert answer.status_code == 200
    assert answer.json()["model_version"] == served
    top = answer.json()["results"][0]
    assert top["item_id"] == "q"
    assert top["score"] > 0.999
    assert_error(
        client.post("/similar", json={"image_base64": b64(photo(1)), "model_version": "other-model-v2"}),
        404,
        "model_not_found",
    )


def test_every_error_code(client_factory: ClientFactory, images: ImageServer) -> None:
    with client_factory(fetch_max_bytes=60_000) as client:
        fill(client)
        before = client.app.state.services.items.store.count()  # type: ignore[attr-defined]
        ok = b64(photo(1))
        cases: list[tuple[Any, int, str]] = [
            (client.post("/similar", json={"k": 3}), 422, "validation_error"),  # no image
            (
                client.post("/similar", json={"image_base64": ok, "image_url": "http://127.0.0.1/x"}),
                422,
                "validation_error",
            ),
            (client.post("/similar", json={"image_base64": ok, "k": 0}), 422, "validation_error"),
            (client.post("/similar", json={"image_base64": ok, "k": 101}), 422, "validation_error"),
            (client.post("/similar", json={"image_base64": ok, "colour": "red"}), 422, "validation_error"),
            (
                client.post("/similar", json={"image_base64": ok, "min_price": 9, "max_price": 1}),
                422,
                "validation_error",
            ),
            (client.post("/similar", json={"image_base64": ok, "exclude_same_seller": True}), 422, "validation_error"),
            (client.post("/similar", json={"image_base64": "not base64!"}), 422, "validation_error"),
            (client.post("/similar", json={"image_base64": b64(b"GIF89a" + b"\0" * 20)}), 422, "image_decode_error"),
            (
                client.post("/similar", json={"image_base64": b64(b"%PDF-1.4 not an image")}),
                415,
                "unsupported_image_type",
            ),
            (
                client.post("/similar", json={"image_base64": b64(b"\xff\xd8\xff" + b"\0" * 70_000)}),
                413,
                "image_too_large",
            ),
            (client.post("/similar", json={"image_url": images.url("/missing.jpg")}), 424, "image_fetch_failed"),
            (client.post("/similar", json={"image_url": "ftp://127.0.0.1/x.jpg"}), 422, "url_not_allowed"),
            (
                client.post("/similar", json={"image_url": f"http://localhost.:{images.port}/x.jpg"}),
                422,
                "url_not_allowed",
            ),
            (
                client.post("/similar", json={"image_url": f"http://LOCALHOST:{images.port}/x.jpg"}),
                422,
                "url_not_allowed",
            ),
            (
                client.post("/similar", json={"image_url": f"http://img.localhost:{images.port}/x"}),
                422,
                "url_not_allowed",
            ),
            (
                client.post("/similar", content=b"{not json", headers={"content-type": "application/json"}),
                400,
                "bad_request",
            ),
            (
                client.post("/similar", data={"k": "3"}, files={"other": ("x.txt", b"x", "text/plain")}),
                422,
                "validation_error",
            ),
            (
                client.post("/similar", data={"k": "many"}, files={"image": ("a.jpg", photo(1), "image/jpeg")}),
                422,
                "validation_error",
            ),
            (client.post("/similar", json={"image_base64": ok, "model_version": "nope"}), 404, "model_not_found"),
        ]
        for i, (response, status, code) in enumerate(cases):
            assert response.status_code == status, (i, response.text)
            assert_error(response, status, code)
        assert images.hits == ["/missing.jpg"]  # the localhost names were refused before any connection
        assert client.app.state.services.items.store.count() == before  # type: ignore[attr-defined]


class HeldEncoder:
    """The real tiny encoder behind a gate the test holds, so the encoder queue can be filled for sure."""

    def __init__(self, real: OnnxImageEncoder) -> None:
        self._real = real
        self.gate = threading.Event()
        self.gate.set()
        self.entered = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        self.entered += 1
        self.gate.wait(60)
        return self._real.embed(pixels)


def test_full_encoder_queue_answers_429(tmp_path: Path, tiny_model_path: Path, tiny_encoder: OnnxImageEncoder) -> None:
    from concurrent.futures import ThreadPoolExecutor

    held = HeldEncoder(tiny_encoder)
    body = {"image_base64": b64(photo(7)), "k": 3}
    settings = {"queue_max": 1, "batch_max_size": 1, "request_timeout_s": 60}
    with open_app(tmp_path, tiny_model_path, held, **settings) as client, ThreadPoolExecutor(2) as pool:  # type: ignore[arg-type]
        batcher = client.app.state.services.items.batcher  # type: ignore[attr-defined]
        held.gate.clear()
        # one at a time: the second would be shed if it arrived while the first still waited in the queue
        waiting = [pool.submit(client.post, "/similar", json=body)]
        wait_until(lambda: held.entered == 1, what="the encoder busy")
        waiting.append(pool.submit(client.post, "/similar", json=body))
        wait_until(lambda: batcher.depth == 1, what="the queue full")
        assert_error(client.post("/similar", json=body), 429, "overloaded")
        held.gate.set()
        assert [f.result(timeout=60).status_code for f in waiting] == [200, 200]
        assert client.post("/similar", json=body).status_code == 200
