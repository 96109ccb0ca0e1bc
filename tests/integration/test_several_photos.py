"""Listings with several photos, on both stores: written whole or not at all, every photo searchable and
served, `matched` naming the pair of photos, boilerplate photos marked as listings come and go."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.store.base import point_id
from app.store.qdrant_edge import EdgeStore
from app.store.qdrant_edge.builder import record_vectors
from tests.conftest import Catalog, ClientFactory
from tests.factories import ImageServer, near_duplicate, photo
from tests.hardening import assert_error, b64, wait_until
from tests.live import kill_after, start_process

REPO = Path(__file__).resolve().parents[2]
CHART = 9000  # the seed of a size chart photo some sellers put on every listing


def listing(item_id: str, seeds: list[int], **fields: Any) -> dict[str, Any]:
    return {"item_id": item_id, "images": [{"base64": b64(photo(s))} for s in seeds], **fields}


def put(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/items", json=body)
    assert r.status_code in (200, 201), r.text
    return r.json()


def similar(client: TestClient, item_id: str, **params: Any) -> list[dict[str, Any]]:
    r = client.get(f"/similar/{item_id}", params={"k": 20, **params})
    assert r.status_code == 200, r.text
    return r.json()["results"]


def score_of(client: TestClient, item_id: str, image: bytes) -> float:
    """The score a search by `image` gives listing `item_id` (its best photo's cosine to the image)."""
    r = client.post("/similar", json={"image_base64": b64(image), "k": 50})
    assert r.status_code == 200, r.text
    return next(hit["score"] for hit in r.json()["results"] if hit["item_id"] == item_id)


def test_three_photos_from_bytes_and_urls_are_kept_and_served(client: TestClient, images: ImageServer) -> None:
    url = images.add("/second.jpg", photo(2))
    body = {"item_id": "bag", "images": [{"base64": b64(photo(1))}, {"url": url}, {"base64": b64(photo(3))}]}
    assert put(client, body)["created"] is True
    item = client.get("/items/bag").json()
    assert item["photo_count"] == 3
    assert item["photos"] == [
        {"image_url": None, "boilerplate": False},
        {"image_url": url, "boilerplate": False},
        {"image_url": None, "boilerplate": False},
    ]
    assert client.get("/items/bag/images/0").content == photo(1)
    assert client.get("/items/bag/image").content == photo(1)  # the cover, as before
    second = client.get("/items/bag/images/1", follow_redirects=False)
    assert second.status_code == 307 and second.headers["location"] == url
    assert client.get("/items/bag/images/2").content == photo(3)
    assert_error(client.get("/items/bag/images/3"), 404, "image_not_found")
    assert_error(client.get("/items/nobody/images/0"), 404, "item_not_found")
    assert_error(client.get("/items/bag/images/-1"), 422, "validation_error")


def test_the_one_photo_forms_stay_and_read_as_one_photo(client: TestClient, images: ImageServer) -> None:
    put(client, {"item_id": "a", "image_base64": b64(photo(5))})
    put(client, {"item_id": "b", "image_url": images.add("/b.jpg", photo(6))})
    assert client.get("/items/a").json()["photo_count"] == 1
    assert client.get("/items/a/images/0").content == photo(5)
    assert client.get("/items/b/images/0", follow_redirects=False).status_code == 307
    r = client.post("/items", json={"item_id": "c", "image_base64": b64(photo(7)), "images": [{"base64": "x"}]})
    assert_error(r, 422, "validation_error")  # exactly one form per item


def test_a_copy_of_another_listings_second_photo_is_the_match_that_names_the_pair(client: TestClient) -> None:
    put(client, listing("orig", [10, 11, 12]))
    for i in range(6):
        put(client, listing(f"other-{i}", [20 + i, 40 + i]))
    put(client, listing("copy", [30, 31, 11]))  # its third photo is orig's second, byte for byte
    top = similar(client, "copy")[0]
    assert top["item_id"] == "orig"
    assert top["matched"]["query_photo"] == 2 and top["matched"]["photo"] == 1
    assert top["matched"]["score"] == pytest.approx(1.0, abs=1e-4)
    # the listing score is the mean of both directions' mean best cosine (copy's photos against orig's, and
    # orig's against copy's); each best cosine is what a search by that photo scores the other listing
    forward = [score_of(client, "orig", photo(seed)) for seed in (30, 31, 11)]
    reverse = [score_of(client, "copy", photo(seed)) for seed in (10, 11, 12)]
    expected = (sum(forward) / 3 + sum(reverse) / 3) / 2
    assert top["score"] == pytest.approx(expected, abs=1e-5) and top["score"] < top["matched"]["score"]
    back = next(r for r in similar(client, "orig") if r["item_id"] == "copy")
    assert (back["matched"]["query_photo"], back["matched"]["photo"]) == (1, 2)
    assert back["score"] == pytest.approx(top["score"], abs=1e-6)  # A looks like B as much as B like A
    for result in similar(client, "copy"):  # every result names a real pair of photos
        assert 0 <= result["matched"]["query_photo"] < 3 and result["matched"]["photo"] >= 0


def test_search_by_a_listings_third_photo_finds_it_with_that_photo(client: TestClient) -> None:
    put(client, listing("shoe", [50, 51, 52]))
    for i in range(5):
        put(client, listing(f"n-{i}", [60 + i]))
    r = client.post("/similar", json={"image_base64": b64(near_duplicate(photo(52), crop=0.0, quality=85))})
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]
    assert top["item_id"] == "shoe"
    assert top["matched"]["query_photo"] == 0 and top["matched"]["photo"] == 2


def test_too_many_photos_is_422_and_stores_nothing(client_factory: ClientFactory) -> None:
    with client_factory(max_photos=3) as client:
        assert_error(client.post("/items", json=listing("x", [1, 2, 3, 4])), 422, "too_many_photos")
        files = [("image", (f"p{i}.jpg", photo(i), "image/jpeg")) for i in range(4)]
        assert_error(client.post("/items", data={"item_id": "y"}, files=files), 422, "too_many_photos")
        batch = client.post("/items/batch", json={"items": [listing("z", [1, 2, 3, 4]), listing("w", [1, 2])]})
        assert [r["status"] for r in batch.json()["results"]] == [422, 201]
        assert batch.json()["results"][0]["error"]["code"] == "too_many_photos"
        assert client.get("/items").json()["items"] == [client.get("/items/w").json()]


def test_twelve_photos_are_the_default_limit(client: TestClient) -> None:
    assert_error(client.post("/items", json=listing("x", list(range(13)))), 422, "too_many_photos")
    assert put(client, listing("x", list(range(12))))["created"] is True
    assert client.get("/items/x").json()["photo_count"] == 12


def test_one_failing_photo_answers_its_error_and_index_and_changes_nothing(
    client: TestClient, images: ImageServer
) -> None:
    put(client, listing("kept", [70, 71]))
    before = client.get("/items/kept").json()
    dead = images.add("/gone.jpg", b"", status=404)
    body = {"item_id": "kept", "images": [{"base64": b64(photo(72))}, {"base64": b64(photo(73))}, {"url": dead}]}
    r = client.post("/items", json=body)
    assert_error(r, 424, "image_fetch_failed")
    assert r.json()["error"]["photo"] == 2
    assert client.get("/items/kept").json() == before  # the listing as it was: no photo of the failed write
    assert client.get("/items/kept/images/1").content == photo(71)
    broken = {"item_id": "new", "images": [{"base64": b64(photo(74))}, {"base64": "not base64!"}]}
    r = client.post("/items", json=broken)
    assert_error(r, 422, "validation_error")
    assert r.json()["error"]["photo"] == 1
    undecodable = {"item_id": "new", "images": [{"base64": b64(b"GIF89a broken")}, {"base64": b64(photo(75))}]}
    r = client.post("/items", json=undecodable)
    assert r.status_code in (415, 422) and r.json()["error"]["photo"] == 0
    assert_error(client.get("/items/new"), 404, "item_not_found")
    one_form = client.post("/items", json={"item_id": "new", "image_url": dead})
    assert_error(one_form, 424, "image_fetch_failed")
    assert "photo" not in one_form.json()["error"]  # the one-photo form has no photo index


def test_multipart_with_several_image_fields_keeps_their_order(client: TestClient) -> None:
    files = [("image", (f"p{i}.jpg", photo(80 + i), "image/jpeg")) for i in range(3)]
    r = client.post("/items", data={"item_id": "mp", "title": "three"}, files=files)
    assert r.status_code == 201, r.text
    assert client.get("/items/mp").json()["photo_count"] == 3
    assert [client.get(f"/items/mp/images/{i}").content for i in range(3)] == [photo(80 + i) for i in range(3)]


def kept_files(root: Path) -> set[str]:
    return {p.name for p in root.rglob("*") if p.is_file()}


def test_replacing_a_listing_replaces_its_photos_and_removes_the_old_files(client: TestClient, tmp_path: Path) -> None:
    put(client, listing("r", [90, 91, 92]))
    root = tmp_path / "images"  # the image store next to the store's folder (make_settings)
    old = kept_files(root)
    assert len(old) == 3
    put(client, listing("r", [93]))
    assert client.get("/items/r").json()["photo_count"] == 1
    assert client.get("/items/r/images/0").content == photo(93)
    assert_error(client.get("/items/r/images/1"), 404, "image_not_found")
    now = kept_files(root)
    assert len(now) == 1 and not now & old
    assert client.delete("/items/r").status_code == 204
    assert kept_files(root) == set()


def marks(client: TestClient, item_id: str) -> list[bool]:
    return [p["boilerplate"] for p in client.get(f"/items/{item_id}").json()["photos"]]


def test_a_shared_size_chart_becomes_boilerplate_and_stops_deciding_the_look_alikes(client: TestClient) -> None:
    chart = {"base64": b64(photo(CHART))}
    for i in range(5):  # the chart on 5 listings: not boilerplate yet (fewer than 5 OTHER listings each)
        put(client, {"item_id": f"shop-{i}", "images": [{"base64": b64(photo(100 + i))}, chart]})
    assert all(marks(client, f"shop-{i}") == [False, False] for i in range(5))
    assert similar(client, "shop-0")[0]["matched"]["photo"] == 1  # the chart decides: what the rule is for
    put(client, {"item_id": "shop-5", "images": [{"base64": b64(photo(105))}, chart]})
    for i in range(6):  # the 6th listing with it: marked on all of them, at that write
        assert marks(client, f"shop-{i}") == [False, True]
    put(client, listing("twin", [100]))  # the same product as shop-0, from another seller
    results = similar(client, "shop-0")
    assert results[0]["item_id"] == "twin" and results[0]["matched"] == {
        "query_photo": 0,
        "photo": 0,
        "score": pytest.approx(1.0, abs=1e-4),
    }
    for r in results:  # the chart never ranks: no match is made of it
        assert r["matched"]["query_photo"] == 0
        if r["item_id"].startswith("shop-"):
            assert r["matched"]["photo"] == 0
    # a 7th listing with a near copy of the chart is marked at its own write; marks stay as listings go
    put(client, {"item_id": "shop-6", "images": [{"base64": b64(photo(106))}, chart]})
    assert marks(client, "shop-6") == [False, True]
    for i in range(6):
        assert client.delete(f"/items/shop-{i}").status_code == 204
    assert marks(client, "shop-6") == [False, True]


def test_a_listing_whose_only_photo_is_boilerplate_still_has_look_alikes(client: TestClient) -> None:
    for i in range(6):
        put(client, {"item_id": f"c-{i}", "images": [{"base64": b64(photo(CHART))}]})
    assert marks(client, "c-0") == [True]
    results = similar(client, "c-0", k=5)
    assert len(results) == 5
    assert all(r["matched"]["score"] == pytest.approx(1.0, abs=1e-4) for r in results)


def test_a_replaced_listing_drops_its_old_marks(client: TestClient) -> None:
    for i in range(6):
        put(client, {"item_id": f"m-{i}", "images": [{"base64": b64(photo(200 + i))}, {"base64": b64(photo(CHART))}]})
    assert marks(client, "m-0") == [False, True]
    put(client, listing("m-0", [300, 301]))  # new photos: the chart's mark was for the old write
    assert marks(client, "m-0") == [False, False]


def test_a_batch_item_with_a_failing_photo_fails_alone_with_the_photo(client: TestClient, images: ImageServer) -> None:
    dead = images.add("/dead.jpg", b"", status=404)
    items = [listing("ok", [400, 401]), {"item_id": "bad", "images": [{"base64": b64(photo(402))}, {"url": dead}]}]
    results = client.post("/items/batch", json={"items": items}).json()["results"]
    assert results[0]["status"] == 201
    assert results[1]["status"] == 424 and results[1]["error"]["photo"] == 1
    assert client.get("/items/ok").json()["photo_count"] == 2
    assert_error(client.get("/items/bad"), 404, "item_not_found")


# ---------------------------------------------------------------- kill -9: a listing is never stored in part

DIM = 16
PHOTO_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from pathlib import Path
    from app.store.qdrant_edge import EdgeStore
    root, start, dim = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    store = EdgeStore(root, "items", hot_max=60, merge_fanin=2)
    store.open({"m": dim})
    i = start
    while True:
        n = 1 + i % 7  # listings are replaced with another number of photos each time
        rows = np.random.default_rng(i).standard_normal((n, dim)).astype(np.float32)
        photos = [{"image_key": f"k{i}-{j}"} for j in range(n)]
        store.upsert([{"item_id": f"L{i % 25}", "write_id": f"w{i}", "photos": photos}], [rows])
        print("A", f"L{i % 25}", i, flush=True)
        i += 1
    """
)


def stored_rows(store: Any, item_id: str) -> np.ndarray | None:
    with store._shard_set.reading() as shards:  # the newest copy, as every read resolves it
        for s in shards:
            records = s.edge.retrieve([point_id(item_id)], True, True)
            if records:
                return np.asarray(record_vectors(records[0].vector)["m~photos"], dtype=np.float32)
    return None


def test_kill9_never_leaves_a_listing_with_part_of_its_photos(tmp_path: Path) -> None:
    root = tmp_path / "qdrant"
    acked: dict[str, int] = {}
    start = 0
    for round_ in range(3):
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = start_process(
            [sys.executable, "-c", PHOTO_WRITER, str(root), str(start), str(DIM)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        lines = kill_after(proc, 1.5 + 0.7 * round_)
        for line in lines:
            _, item_id, i = line.split()
            acked[item_id] = max(acked.get(item_id, -1), int(i))
        assert acked, "the writer acknowledged nothing"
        start = max(acked.values()) + 100  # fresh writes next round (the same 25 listings)
        store = EdgeStore(root, "items", hot_max=60, merge_fanin=2)
        store.open({"m": DIM})
        try:
            for item_id, last in acked.items():
                payload = store.get(item_id)
                assert payload is not None, f"acknowledged {item_id} lost after kill -9"
                i = int(payload["write_id"][1:])
                assert i >= last  # the acknowledged write, or a later one that landed before the kill
                n = 1 + i % 7
                expected = np.random.default_rng(i).standard_normal((n, DIM)).astype(np.float32)
                expected /= np.linalg.norm(expected, axis=1, keepdims=True)
                rows = stored_rows(store, item_id)
                assert rows is not None and rows.shape == (n, DIM), f"{item_id}: {n} photos written"
                assert np.allclose(rows, expected, atol=1e-5)  # every photo of that one write, in order
                assert [p["image_key"] for p in payload["photos"]] == [f"k{i}-{j}" for j in range(n)]
        finally:
            store.close()


# ---------------------------------------------------------------- model versions: a backfill embeds every photo


def test_a_backfill_embeds_every_photo_and_coverage_counts_listings(catalog: Catalog, images: ImageServer) -> None:
    m = catalog.models
    url = images.add("/p2.jpg", photo(502))
    with catalog.app(m.v1) as client:
        put(
            client,
            {"item_id": "three", "images": [{"base64": b64(photo(500))}, {"base64": b64(photo(501))}, {"url": url}]},
        )
        put(client, listing("one", [510]))
        put(client, listing("copy", [520, 501]))  # holds three's second photo
    with catalog.app(m.v1, m.v2) as client:
        started = client.post("/models/v2/backfill")
        assert started.status_code == 202, started.text
        wait_until(lambda: client.get("/models/v2/backfill").json()["state"] != "running", timeout_s=120, what="end")
        status = client.get("/models/v2/backfill").json()
        assert (status["state"], status["embedded"], status["failed"]) == ("done", 3, 0)
        versions = {v["model_version"]: v for v in client.get("/models").json()["versions"]}
        assert versions["v2"]["coverage"] == 1.0 and versions["v2"]["items_missing"] == 0
        top = similar(client, "copy", model_version="v2")[0]  # v2's vectors hold every photo of each listing
        assert top["item_id"] == "three" and (top["matched"]["query_photo"], top["matched"]["photo"]) == (1, 1)
        by_photo = client.post("/similar", json={"image_url": url, "model_version": "v2", "k": 3}).json()
        assert by_photo["results"][0]["item_id"] == "three" and by_photo["results"][0]["matched"]["photo"] == 2


# ---------------------------------------------------------------- lookalike index: JSONL lines with `images`


def test_index_takes_lines_with_images_and_orphans_knows_every_photo(
    tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main
    from app.store.images import ImageStore

    monkeypatch.setenv("LOOKALIKE_MODEL_PATH", str(tiny_model_path))
    monkeypatch.setenv("LOOKALIKE_QDRANT_PATH", str(tmp_path / "q"))
    (tmp_path / "img").mkdir()
    for i in range(4):
        (tmp_path / "img" / f"{i}.jpg").write_bytes(photo(600 + i))
    lines = [
        {"item_id": "multi", "images": ["img/0.jpg", "img/1.jpg", {"base64": b64(photo(610))}], "title": "three"},
        {"item_id": "single", "image": "img/2.jpg"},
        {"item_id": "broken", "images": ["img/3.jpg", "img/none.jpg"]},
    ]
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    assert main(["index", str(tmp_path / "items.jsonl")]) == 3  # some lines failed
    assert "indexed 2 item(s), 1 failed" in capsys.readouterr().err
    assert main(["similar", "single", "--k", "1"]) == 0
    capsys.readouterr()
    kept = ImageStore(tmp_path / "images")
    assert len(list(kept.keys())) == 4  # three photos of `multi`, one of `single`
    assert main(["images", "orphans"]) == 0
    assert json.loads(capsys.readouterr().out)["orphans"] == []  # every photo's file is named by its listing
