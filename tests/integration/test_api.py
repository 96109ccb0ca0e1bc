"""The HTTP contract end to end: real tiny ONNX model, real Qdrant engines, real HTTP images."""

from __future__ import annotations

import base64
import json

import pytest
from fastapi.testclient import TestClient

from tests.factories import ImageServer, encode, near_duplicate, photo


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def post(client: TestClient, item_id: str, seed: int, **fields: object) -> dict:
    response = client.post("/items", json={"item_id": item_id, "image_base64": b64(photo(seed)), **fields})
    assert response.status_code in (200, 201), response.text
    return response.json()


def similar_ids(client: TestClient, item_id: str, **params: object) -> list[str]:
    response = client.get(f"/similar/{item_id}", params=params)
    assert response.status_code == 200, response.text
    return [r["item_id"] for r in response.json()["results"]]


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


# ---- writes ---------------------------------------------------------------------------------------


def test_post_base64_creates_then_replaces(client: TestClient) -> None:
    first = client.post("/items", json={"item_id": "sku-1", "image_base64": b64(photo(1)), "title": "red bag"})
    assert first.status_code == 201
    assert first.json()["created"] is True
    assert first.json()["model_version"]
    again = client.post("/items", json={"item_id": "sku-1", "image_base64": b64(photo(2)), "title": "blue bag"})
    assert again.status_code == 200
    assert again.json()["created"] is False
    item = client.get("/items/sku-1").json()
    assert item["title"] == "blue bag"
    assert item["status"] == "on_sale"
    assert item["model_version"] == first.json()["model_version"]


def test_post_multipart(client: TestClient) -> None:
    response = client.post(
        "/items",
        data={"item_id": "up-1", "title": "lamp", "price": "12.5", "attributes": json.dumps({"colour": "red"})},
        files={"image": ("lamp.png", photo(3, fmt="PNG"), "image/png")},
    )
    assert response.status_code == 201, response.text
    item = client.get("/items/up-1").json()
    assert item["price"] == 12.5
    assert item["attributes"] == {"colour": "red"}


def test_post_multipart_without_file_is_422(client: TestClient) -> None:
    response = client.post("/items", data={"item_id": "up-2"}, files={"other": ("x.txt", b"x", "text/plain")})
    assert_error(response, 422, "validation_error")
    assert client.get("/items/up-2").status_code == 404


def test_post_from_url_on_loopback_server(client: TestClient, images: ImageServer) -> None:
    url = images.add("/a.jpg", photo(4))
    response = client.post("/items", json={"item_id": "url-1", "image_url": url})
    assert response.status_code == 201, response.text
    assert "/a.jpg" in images.hits
    assert client.get("/items/url-1").status_code == 200


def test_url_answering_404_is_424_and_stores_nothing(client: TestClient, images: ImageServer) -> None:
    response = client.post("/items", json={"item_id": "url-2", "image_url": images.url("/missing.jpg")})
    assert_error(response, 424, "image_fetch_failed")
    assert client.get("/items/url-2").status_code == 404


def test_written_item_is_similar_at_once(client: TestClient) -> None:
    post(client, "a", 10)
    post(client, "b", 11)
    assert similar_ids(client, "a") == ["b"]


# ---- ranking --------------------------------------------------------------------------------------


def test_near_duplicate_is_top1_of_its_original(client: TestClient) -> None:
    originals = {f"orig-{i}": photo(100 + i) for i in range(12)}
    for item_id, data in originals.items():
        assert client.post("/items", json={"item_id": item_id, "image_base64": b64(data)}).status_code == 201
    for item_id, data in list(originals.items())[:6]:
        dup_id = f"dup-of-{item_id}"
        body = {"item_id": dup_id, "image_base64": b64(near_duplicate(data))}
        assert client.post("/items", json=body).status_code == 201
        assert similar_ids(client, dup_id, k=3)[0] == item_id
        client.delete(f"/items/{dup_id}")


def test_results_exclude_self_respect_k_and_are_ordered(client: TestClient) -> None:
    for i in range(8):
        post(client, f"it-{i}", 200 + i)
    answer = client.get("/similar/it-0", params={"k": 5}).json()
    ids = [r["item_id"] for r in answer["results"]]
    scores = [r["score"] for r in answer["results"]]
    assert len(ids) == 5
    assert "it-0" not in ids
    assert scores == sorted(scores, reverse=True)
    assert answer["item_id"] == "it-0"
    assert set(answer["results"][0]) == {
        "item_id",
        "score",
        "matched",
        "title",
        "category",
        "price",
        "seller_id",
        "status",
    }


def test_filters(client: TestClient) -> None:
    post(client, "q", 300, category="bags", price=50, seller_id="s1")
    post(client, "bag-cheap", 301, category="bags", price=10, seller_id="s2")
    post(client, "bag-dear", 302, category="bags", price=500, seller_id="s3")
    post(client, "bag-same-seller", 303, category="bags", price=60, seller_id="s1")
    post(client, "shoe", 304, category="shoes", price=40, seller_id="s4")
    post(client, "bag-sold", 305, category="bags", price=55, seller_id="s5", status="sold")

    assert set(similar_ids(client, "q")) == {"bag-cheap", "bag-dear", "bag-same-seller", "shoe"}
    assert set(similar_ids(client, "q", category="bags")) == {"bag-cheap", "bag-dear", "bag-same-seller"}
    assert set(similar_ids(client, "q", min_price=20)) == {"bag-dear", "bag-same-seller", "shoe"}
    assert set(similar_ids(client, "q", max_price=100)) == {"bag-cheap", "bag-same-seller", "shoe"}
    assert set(similar_ids(client, "q", min_price=20, max_price=100)) == {"bag-same-seller", "shoe"}
    assert "bag-sold" in similar_ids(client, "q", include_sold=True)
    assert "bag-same-seller" not in similar_ids(client, "q", exclude_same_seller=True)
    assert set(similar_ids(client, "q", category="shoes", exclude_same_seller=True)) == {"shoe"}


def test_patch_sold_hides_item_until_include_sold(client: TestClient) -> None:
    post(client, "p1", 400)
    post(client, "p2", 401)
    response = client.patch("/items/p2", json={"status": "sold", "price": 9.5})
    assert response.status_code == 200
    assert response.json()["status"] == "sold"
    assert response.json()["price"] == 9.5
    assert similar_ids(client, "p1") == []
    assert similar_ids(client, "p1", include_sold=True) == ["p2"]
    # null removes a field; the vector is untouched (no re-embedding)
    assert client.patch("/items/p2", json={"price": None}).json().get("price") is None
    assert "price" not in client.get("/items/p2").json() or client.get("/items/p2").json()["price"] is None


def test_delete(client: TestClient) -> None:
    post(client, "d1", 500)
    post(client, "d2", 501)
    assert client.delete("/items/d2").status_code == 204
    assert client.get("/items/d2").status_code == 404
    assert similar_ids(client, "d1") == []
    assert_error(client.delete("/items/d2"), 404, "item_not_found")


# ---- batch ----------------------------------------------------------------------------------------


def test_batch_with_one_bad_item(client: TestClient) -> None:
    items = [
        {"item_id": "b-1", "image_base64": b64(photo(600))},
        {"item_id": "b-2", "image_base64": b64(b"not an image at all")},
        {"item_id": "b 3 bad id", "image_base64": b64(photo(602))},
        {"item_id": "b-4", "image_base64": b64(photo(603)), "price": -1},
        {"item_id": "b-5", "image_base64": b64(photo(604))},
        {"item_id": "b-1", "image_base64": b64(photo(605))},
    ]
    response = client.post("/items/batch", json={"items": items})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 415, 422, 422, 201, 422]
    assert results[1]["error"]["code"] == "unsupported_image_type"
    assert results[2]["error"]["code"] == "validation_error"
    assert results[0]["error"] is None
    # flat: {"item_id", "status", "error": {"code", "message"} | null}, the error as in an error body
    assert set(results[1]) == {"item_id", "status", "error"}
    assert set(results[1]["error"]) == {"code", "message"} and results[1]["error"]["message"]
    assert client.get("/items/b-1").status_code == 200
    assert client.get("/items/b-5").status_code == 200
    for missing in ("b-2", "b-4"):
        assert client.get(f"/items/{missing}").status_code == 404


def test_batch_size_limits(client: TestClient) -> None:
    assert_error(client.post("/items/batch", json={"items": []}), 422, "validation_error")
    too_many = [{"item_id": f"x{i}", "image_base64": "AA=="} for i in range(257)]
    assert_error(client.post("/items/batch", json={"items": too_many}), 422, "validation_error")
    assert client.get("/items/x0").status_code == 404


# ---- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/items/nope"), ("patch", "/items/nope"), ("delete", "/items/nope"), ("get", "/similar/nope")],
)
def test_unknown_item_is_404_on_every_route(client: TestClient, method: str, path: str) -> None:
    kwargs = {"json": {"title": "x"}} if method == "patch" else {}
    assert_error(getattr(client, method)(path, **kwargs), 404, "item_not_found")


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("get", "/items/bad%20id", {}),
        ("get", "/items/" + "x" * 129, {}),
        ("patch", "/items/bad%20id", {"json": {"title": "x"}}),
        ("delete", "/items/bad%20id", {}),
        ("get", "/similar/bad%20id", {}),
        ("get", "/similar/ok-id", {"params": {"k": 0}}),
        ("get", "/similar/ok-id", {"params": {"k": 101}}),
        ("get", "/similar/ok-id", {"params": {"k": "ten"}}),
        ("get", "/similar/ok-id", {"params": {"min_price": -1}}),
        ("get", "/similar/ok-id", {"params": {"min_price": 10, "max_price": 5}}),
        ("get", "/similar/ok-id", {"params": {"unknown_filter": 1}}),
        ("patch", "/items/ok-id", {"json": {}}),
        ("patch", "/items/ok-id", {"json": {"status": "lost"}}),
        ("patch", "/items/ok-id", {"json": {"status": None}}),
        ("patch", "/items/ok-id", {"json": {"image_url": "http://x/y.jpg"}}),
        ("post", "/items", {"json": {"item_id": "x"}}),
        ("post", "/items", {"json": {"item_id": "x", "image_url": "http://a/b", "image_base64": "AA=="}}),
        ("post", "/items", {"json": {"item_id": "x", "image_base64": "AA==", "price": -3}}),
        ("post", "/items", {"json": {"item_id": "x", "image_base64": "AA==", "status": "gone"}}),
        ("post", "/items", {"json": {"item_id": "x", "image_base64": "AA==", "attributes": {"a": {"b": 1}}}}),
        ("post", "/items", {"json": {"item_id": "x", "image_base64": "AA==", "surprise": 1}}),
        ("post", "/items", {"json": {"item_id": "x", "image_base64": "%%%not base64%%%"}}),
        ("post", "/items", {"json": ["not", "an", "object"]}),
        ("post", "/items/batch", {"json": {"things": []}}),
    ],
)
def test_bad_input_is_422(client: TestClient, method: str, path: str, kwargs: dict) -> None:
    post(client, "ok-id", 700)
    before = client.get("/items/ok-id").json()
    assert_error(getattr(client, method)(path, **kwargs), 422, "validation_error")
    assert client.get("/items/ok-id").json() == before
    assert client.get("/items/x").status_code == 404


def test_malformed_json_is_400(client: TestClient) -> None:
    for path in ("/items", "/items/batch"):
        response = client.post(path, content=b'{"item_id": ', headers={"content-type": "application/json"})
        assert_error(response, 400, "bad_request")
    assert_error(
        client.patch("/items/a", content=b"{nope", headers={"content-type": "application/json"}), 400, "bad_request"
    )


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"II*\x00" + b"\x00" * 64, 415, "unsupported_image_type"),  # TIFF
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", 415, "unsupported_image_type"),
        (photo(800)[:300], 422, "image_decode_error"),  # truncated JPEG
    ],
)
def test_bad_images(client: TestClient, data: bytes, status: int, code: str) -> None:
    assert_error(client.post("/items", json={"item_id": "img", "image_base64": b64(data)}), status, code)
    assert client.get("/items/img").status_code == 404


def test_too_many_pixels_is_413(client_factory) -> None:
    from PIL import Image

    with client_factory(image_max_pixels=100 * 100) as client:
        big = encode(Image.new("RGB", (101, 100), (9, 9, 9)), "PNG")
        assert_error(client.post("/items", json={"item_id": "big", "image_base64": b64(big)}), 413, "image_too_large")
        assert client.get("/items/big").status_code == 404


def test_body_over_cap_is_413(client_factory) -> None:
    with client_factory(request_max_bytes=4096) as client:
        body = {"item_id": "huge", "image_base64": b64(photo(900, size=512))}
        assert_error(client.post("/items", json=body), 413, "payload_too_large")
        assert client.get("/items/huge").status_code == 404


def test_api_key_guards_writes_only(client_factory) -> None:
    with client_factory(api_key="s3cret") as client:
        body = {"item_id": "k1", "image_base64": b64(photo(901))}
        assert_error(client.post("/items", json=body), 401, "unauthorized")
        assert_error(client.post("/items", json=body, headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
        assert client.get("/items/k1").status_code == 404
        assert client.post("/items", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 201
        assert client.get("/items/k1").status_code == 200  # reads stay open
        assert_error(client.delete("/items/k1"), 401, "unauthorized")


def test_unknown_route_keeps_error_shape(client: TestClient) -> None:
    response = client.get("/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    response = client.put("/items/sku-1", json={})
    assert response.status_code == 405
    assert response.json()["error"] == {"code": "method_not_allowed", "message": "Method Not Allowed"}


# ---- operations -----------------------------------------------------------------------------------


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a /metrics text: {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def grown(before: dict, after: dict, name: str, **labels: str) -> float:
    """How much the samples named `name` (with these labels, summed over the others) grew."""

    def total(samples: dict) -> float:
        want = set(labels.items())
        return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)

    return total(after) - total(before)


def test_health_ready_metrics(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json() == {"status": "ready"}
    before = metric_samples(client.get("/metrics").text)
    post(client, "m1", 1000)
    assert client.get("/similar/m1").status_code == 200
    assert client.post("/items", json={"item_id": "bad", "image_base64": b64(b"not an image")}).status_code == 415
    after = metric_samples(client.get("/metrics").text)
    # prometheus_client prints every registered name even without samples: what counts is that samples grew
    write = {"route": "/items", "method": "POST"}
    assert grown(before, after, "lookalike_http_requests_total", status="201", **write) == 1
    assert grown(before, after, "lookalike_http_requests_total", status="415", **write) == 1
    assert grown(before, after, "lookalike_http_request_duration_seconds_count", route="/similar/{item_id}") == 1
    assert grown(before, after, "lookalike_image_decode_duration_seconds_count") >= 1
    assert grown(before, after, "lookalike_image_rejected_total") == 1
    assert grown(before, after, "lookalike_batch_queue_wait_seconds_count") == 1
    assert (
        grown(before, after, "lookalike_batch_size_count") == 1
        and grown(before, after, "lookalike_batch_size_sum") == 1
    )
    assert grown(before, after, "lookalike_inference_duration_seconds_count") == 1
    assert grown(before, after, "lookalike_inference_duration_seconds_sum") > 0
    assert grown(before, after, "lookalike_store_duration_seconds_count", op="upsert") == 1
    assert grown(before, after, "lookalike_store_duration_seconds_count", op="similar") == 1
    assert grown(before, after, "lookalike_items_indexed_total") == 1
    # The serving model is described once; other versions in the series come from other apps of this test process.
    serving = client.get("/info").json()["model_version"]
    info = [v for (n, ls), v in after.items() if n == "lookalike_model_info" and ("version", serving) in ls]
    assert info == [1.0]
    assert client.get("/items/m1").headers["x-request-id"]
