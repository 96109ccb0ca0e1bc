"""GET /items (browsing with an opaque cursor) and GET /items/{id}/image, on both stores."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.factories import ImageServer, photo
from tests.hardening import assert_error, b64


def add(client: TestClient, ids: list[str], **fields: Any) -> None:
    items = [{"item_id": i, "image_base64": b64(photo(n)), **fields} for n, i in enumerate(ids)]
    results = client.post("/items/batch", json={"items": items}).json()["results"]
    assert all(r["status"] in (200, 201) for r in results), results


def page_through(client: TestClient, limit: int, between: Any = None, **params: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    for _ in range(200):
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        response = client.get("/items", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "next_cursor"}
        assert len(body["items"]) <= limit
        pages.append([i["item_id"] for i in body["items"]])
        if between is not None:
            between(len(pages))
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("paging did not end within 200 pages")


def test_paging_returns_every_item_exactly_once(client: TestClient) -> None:
    ids = [f"p-{i:02d}" for i in range(23)]
    add(client, ids, category="bags", price=5.0)
    pages = page_through(client, 5)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    listed = [i for p in pages for i in p]
    assert sorted(listed) == ids
    assert page_through(client, 200) == [listed]  # a stable order, whatever the page size
    assert page_through(client, 23) == [listed]
    first = client.get("/items", params={"limit": 1}).json()["items"][0]
    assert first["item_id"] == listed[0]
    assert first["category"] == "bags"
    assert first["price"] == 5.0
    assert first["status"] == "on_sale"
    assert first["model_version"]


def test_paging_while_items_are_added(client: TestClient) -> None:
    originals = [f"o-{i:02d}" for i in range(15)]
    add(client, originals)

    def write_more(page: int) -> None:
        add(client, [f"new-{page}-a", f"new-{page}-b"])
        add(client, [originals[page % 15]], title="replaced while paging")  # a rewrite keeps its place

    listed = [i for p in page_through(client, 4, between=write_more) for i in p]
    assert len(listed) == len(set(listed))
    assert sorted(i for i in listed if i.startswith("o-")) == originals


def test_category_and_status_filters(client: TestClient) -> None:
    add(client, ["b1", "b2", "b3"], category="bags")
    add(client, ["s1", "s2"], category="shoes")
    assert client.patch("/items/b2", json={"status": "sold"}).status_code == 200
    assert sorted(i for p in page_through(client, 2, category="bags") for i in p) == ["b1", "b2", "b3"]
    assert [i for p in page_through(client, 2, status="sold") for i in p] == ["b2"]
    assert sorted(i for p in page_through(client, 1, category="bags", status="on_sale") for i in p) == ["b1", "b3"]
    assert page_through(client, 5, category="hats") == [[]]


def test_bad_parameters(client: TestClient) -> None:
    add(client, ["a", "b", "c"])
    cursor = client.get("/items", params={"limit": 1}).json()["next_cursor"]
    assert isinstance(cursor, str)
    for params in ({"limit": 0}, {"limit": 201}, {"limit": "x"}, {"status": "gone"}, {"colour": "red"}, {"cursor": ""}):
        assert_error(client.get("/items", params=params), 422, "validation_error")
    raw = base64.urlsafe_b64decode(cursor + "==")
    for bad in ("abc", cursor[:-1], cursor + "A", "!" * 22, cursor[:-1] + "B", "x" * 64):
        assert_error(client.get("/items", params={"cursor": bad}), 422, "invalid_cursor")
    assert len(raw) == 16
    assert client.get("/items", params={"cursor": cursor, "limit": 5}).status_code == 200


def test_item_image_redirects_to_its_url(client: TestClient, images: ImageServer) -> None:
    url = images.add("/p.jpg", photo(3))
    assert client.post("/items", json={"item_id": "from-url", "image_url": url}).status_code == 201
    assert client.get("/items/from-url").json()["image_url"] == url
    response = client.get("/items/from-url/image", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == url
    assert httpx.get(response.headers["location"], timeout=10).content == photo(3)  # there: the photo itself
    add(client, ["from-bytes"])
    assert client.get("/items/from-bytes").json()["image_url"] is None
    kept = client.get("/items/from-bytes/image")  # written from bytes: the kept bytes themselves
    assert (kept.status_code, kept.content, kept.headers["content-type"]) == (200, photo(0), "image/jpeg")
    assert_error(client.get("/items/nobody/image"), 404, "item_not_found")
    # rewritten from bytes: the old URL is no longer the item's photo
    add(client, ["from-url"])
    rewritten = client.get("/items/from-url/image", follow_redirects=False)
    assert (rewritten.status_code, rewritten.content) == (200, photo(0))
    listed = client.get("/items").json()["items"]
    assert all(i["image_url"] is None for i in listed)
