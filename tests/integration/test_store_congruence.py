"""One sequence of writes, patches, deletes and queries on both stores must give the same answers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from app.core.errors import ModelNotFound, ModelNotReady, ModelServing, SinglePhotoVersion
from app.store.base import CollectionMismatch, ModelVersion, SimilarFilters, VectorStore, VersionsChanged, point_id
from app.store.qdrant_edge import EdgeStore
from app.store.qdrant_server import ServerStore

DIM = 16


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def run_sequence(store: VectorStore) -> list[Any]:
    """Returns every answer the store gave, in order, for comparison."""
    rng = np.random.default_rng(7)
    answers: list[Any] = []
    store.open({"test-model-v1": DIM})
    categories = ["bags", "shoes", "hats"]
    payloads = [
        {
            "item_id": f"item-{i}",
            "category": categories[i % 3],
            "price": float(10 * i),
            "seller_id": f"s{i % 4}",
            "status": "sold" if i % 7 == 0 else "on_sale",
            "title": f"thing {i}",
            "model_version": "test-model-v1",
            "indexed_at": 0.0,
        }
        for i in range(40)
    ]
    answers.append(store.upsert(payloads[:30], unit(rng, 30)))
    answers.append(store.upsert(payloads[25:], unit(rng, 15)))  # 5 replaced, 10 new
    answers.append(store.count())
    answers.append(store.get("item-3"))
    answers.append(store.get("missing"))
    answers.append(store.patch("item-4", {"status": "sold", "price": None, "title": "renamed"}))
    answers.append(store.patch("missing", {"title": "x"}))
    answers.append(store.delete("item-5"))
    answers.append(store.delete("item-5"))
    answers.append(store.count())
    filters = [
        SimilarFilters(),
        SimilarFilters(include_sold=True),
        SimilarFilters(category="bags"),
        SimilarFilters(min_price=50, max_price=250),
        SimilarFilters(exclude_same_seller=True),
        SimilarFilters(category="shoes", include_sold=True, exclude_same_seller=True, max_price=300),
    ]
    for query_id in ("item-1", "item-4", "item-26", "item-39"):
        for f in filters:
            hits = store.similar(query_id, 7, f)
            assert hits is not None
            answers.append([(h.item_id, round(h.score, 4), h.payload.get("status")) for h in hits])
    answers.append(store.similar("item-5", 5, SimilarFilters()))  # deleted -> unknown
    query = unit(np.random.default_rng(11), 1)[0]
    for f in [*filters, SimilarFilters(exclude_same_seller=True, seller_id="s1"), SimilarFilters(seller_id="s2")]:
        hits = store.similar_to_vector(query, 7, f)
        answers.append(
            [(h.item_id, round(h.score, 4), h.payload.get("status"), h.payload.get("seller_id")) for h in hits]
        )
    for limit, category, status in (
        (7, None, None),
        (1, None, None),
        (200, None, None),
        (4, "bags", None),
        (3, None, "sold"),
    ):
        answers.append(list_all(store, limit, category, status))
    return answers


def list_all(store: VectorStore, limit: int, category: str | None, status: str | None) -> list[list[str]]:
    """Every page of list_items, as item ids per page (bounded: a store that never ends fails the test)."""
    pages: list[list[str]] = []
    cursor = None
    for _ in range(100):
        page = store.list_items(limit, cursor, category, status)
        assert len(page.items) <= limit
        pages.append([p["item_id"] for p in page.items])
        cursor = page.next_point
        if cursor is None:
            return pages
    raise AssertionError("list_items did not end within 100 pages")


def test_edge_and_server_stores_agree(tmp_path: Path) -> None:
    edge = EdgeStore(tmp_path / "edge", "items")
    server = ServerStore(QdrantClient(":memory:"), "items")
    try:
        edge_answers = run_sequence(edge)
        server_answers = run_sequence(server)
    finally:
        edge.close()
        server.close()
    assert len(edge_answers) == len(server_answers)
    for i, (a, b) in enumerate(zip(edge_answers, server_answers, strict=True)):
        assert a == b, f"answer {i} differs:\nedge:   {a}\nserver: {b}"
    # the answers are meaningful, not just equal: 39 items remain, every one listed exactly once
    everything = [i for page in edge_answers[-5] for i in page]
    assert len(everything) == len(set(everything)) == 39
    assert all(len(page) == 7 for page in edge_answers[-5][:-1])
    assert [i for page in edge_answers[-2] for i in page] == sorted(
        (i for i in everything if int(i.split("-")[1]) % 3 == 0), key=lambda i: point_id(i)
    )
    exclusive = edge_answers[-7]  # similar_to_vector, exclude_same_seller with seller s1
    assert exclusive and all(seller != "s1" for *_, seller in exclusive)


def exact_listing_ranking(
    listings: dict[str, np.ndarray], marks: dict[str, list[int]], query_id: str, k: int
) -> list[tuple[str, int, int]]:
    """Brute force over every photo: each listing's score with the query (the mean of the two directions'
    mean best cosine: the query's usable photos against the listing's and back; all of a listing's photos
    when all are boilerplate) and its closest pair; the top k as (item_id, query photo, photo)."""

    def usable(item_id: str) -> list[int]:
        n = len(listings[item_id])
        return [i for i in range(n) if i not in marks.get(item_id, [])] or list(range(n))

    q = listings[query_id]
    ranked = []
    for item_id, rows in listings.items():
        if item_id == query_id:
            continue
        pairs = {(i, j): float(q[i] @ rows[j]) for i in usable(query_id) for j in usable(item_id)}
        forward = np.mean([max(pairs[i, j] for j in usable(item_id)) for i in usable(query_id)])
        reverse = np.mean([max(pairs[i, j] for i in usable(query_id)) for j in usable(item_id)])
        score = float(forward + reverse) / 2
        i, j = max(pairs, key=lambda pair: pairs[pair])
        ranked.append((-score, item_id, i, j))
    return [(item_id, i, j) for _, item_id, i, j in sorted(ranked)[:k]]


def run_photo_sequence(store: VectorStore) -> list[Any]:
    """Listings of 1 to 5 photos: written, replaced, marked boilerplate, searched; every answer in order."""
    rng = np.random.default_rng(21)
    store.open({"m": DIM})
    listings = {f"l{i}": unit(rng, 1 + i % 5) for i in range(30)}
    chart = unit(rng, 1)[0]
    for i in range(0, 30, 4):  # a shared photo on 8 listings, as their last photo
        listings[f"l{i}"][-1] = chart
    answers: list[Any] = []
    ids = sorted(listings)
    payloads = [{"item_id": i, "write_id": f"w-{i}", "seller_id": f"s{n % 3}"} for n, i in enumerate(ids)]
    answers.append(store.upsert(payloads, [listings[i] for i in ids]))
    listings["l1"] = unit(rng, 3)  # replaced with other photos, whole
    answers.append(store.upsert([{"item_id": "l1", "write_id": "w-l1b"}], [listings["l1"]]))
    copies = store.photo_copies(chart, 0.999, 20, leave_out="l0")
    answers.append(sorted(copies.items()))
    assert sorted(copies) == sorted(f"l{i}" for i in range(4, 30, 4))
    assert all(idx == [len(listings[item_id]) - 1] for item_id, idx in copies.items())
    marks = {item_id: idx for item_id, idx in copies.items()}
    for item_id, idx in marks.items():
        payload = store.get(item_id)
        assert payload is not None
        store.patch(item_id, {"boilerplate": {"write_id": payload["write_id"], "photos": idx}})
    for query_id in ("l1", "l2", "l4", "l7", "l8"):
        hits = store.similar(query_id, 6, SimilarFilters(include_sold=True))
        assert hits is not None and all(h.matched is not None for h in hits)
        served = [(h.item_id, h.matched.query_photo, h.matched.photo) for h in hits]  # type: ignore[union-attr]
        assert served == exact_listing_ranking(listings, marks, query_id, 6), query_id
        answers.append(
            [(h.item_id, round(h.score, 4), served_pair) for h, served_pair in zip(hits, served, strict=True)]
        )
    hits = store.similar_to_vector(listings["l13"][2], 3, SimilarFilters(include_sold=True))
    assert hits[0].item_id == "l13" and hits[0].matched is not None and hits[0].matched.photo == 2
    answers.append([(h.item_id, round(h.score, 4), h.matched.photo if h.matched else None) for h in hits])
    answers.append(store.coverage("m"))
    answers.append(store.set_vector("l2", "m", unit(rng, 4), "w-l2"))  # a backfill writes every photo at once
    answers.append([(h.item_id, h.matched.photo if h.matched else None) for h in store.similar("l2", 3, ANY) or []])
    return answers


def test_edge_and_server_stores_agree_on_listings_with_several_photos(tmp_path: Path) -> None:
    edge = EdgeStore(tmp_path / "edge", "items")
    server = ServerStore(QdrantClient(":memory:"), "items")
    try:
        edge_answers = run_photo_sequence(edge)
        server_answers = run_photo_sequence(server)
    finally:
        edge.close()
        server.close()
    for i, (a, b) in enumerate(zip(edge_answers, server_answers, strict=True)):
        assert a == b, f"answer {i} differs:\nedge:   {a}\nserver: {b}"


def wait_for_spare(store: EdgeStore, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not store.stats()["spare_ready"]:
        assert time.monotonic() < deadline, "the embedded store made no spare shard in time"
        time.sleep(0.05)


def test_edge_paging_across_shards_while_items_are_added(tmp_path: Path) -> None:
    """Several shards (a small hot_max): every item present from the start is listed exactly once."""
    rng = np.random.default_rng(3)
    store = EdgeStore(tmp_path / "edge", "items", hot_max=8)
    store.open({"v": DIM})
    try:
        for start in range(0, 40, 5):
            wait_for_spare(store)  # a freeze (new hot shard) needs the spare made in the background
            store.upsert([{"item_id": f"a{i}", "status": "on_sale"} for i in range(start, start + 5)], unit(rng, 5))
        store.upsert([{"item_id": f"a{i}", "status": "on_sale"} for i in range(0, 40, 3)], unit(rng, 14))  # moved
        assert len(store.stats()["shards"]) > 1
        seen: list[str] = []
        cursor = None
        for n in range(100):
            page = store.list_items(6, cursor, None, None)
            seen += [p["item_id"] for p in page.items]
            store.upsert([{"item_id": f"new{n}", "status": "on_sale"}], unit(rng, 1))  # added while paging
            cursor = page.next_point
            if cursor is None:
                break
        originals = [i for i in seen if i.startswith("a")]
        assert sorted(originals) == sorted(f"a{i}" for i in range(40))
        assert len(seen) == len(set(seen))
    finally:
        store.close()


# ---------------------------------------------------------------- model versions (named vectors)

DIMS = {"va": 16, "vb": 8}
ANY = SimilarFilters(include_sold=True)


def unit_of(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def brute_force(vectors: dict[str, np.ndarray], query: np.ndarray, k: int, leave_out: str | None) -> list[str]:
    scores = {i: float(v @ query) for i, v in vectors.items() if i != leave_out}
    return [i for i, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def edge_factory(root: Path) -> Callable[[], VectorStore]:
    return lambda: EdgeStore(root, "items")


def server_factory(root: Path) -> Callable[[], VectorStore]:
    return lambda: ServerStore(QdrantClient(path=str(root)), "items")


def vector_names(store: VectorStore) -> set[str]:
    """The named vectors the collection physically has (every shard of the embedded store)."""
    if isinstance(store, EdgeStore):
        with store._shard_set.reading() as shards:
            names = [set(s.vectors()) for s in shards]
        assert all(n == names[0] for n in names), names  # every shard has every active vector
        return names[0]
    vectors = store._client.get_collection("items").config.params.vectors
    assert isinstance(vectors, dict)
    return set(vectors)


def run_versions(make: Callable[[], VectorStore]) -> list[Any]:
    """The version operations on one store; asserts behaviour and returns answers for comparison."""
    rng = np.random.default_rng(5)
    answers: list[Any] = []
    store = make()
    try:
        opened = store.open(DIMS)
        assert opened == [ModelVersion("va", "serving", 16), ModelVersion("vb", "candidate", 8)]
        ids = [f"item-{i}" for i in range(20)]
        payloads = [
            {"item_id": i, "write_id": f"w-{n}", "status": "on_sale", "seller_id": "s"} for n, i in enumerate(ids)
        ]
        va, vb = unit_of(rng, 20, 16), unit_of(rng, 20, 8)
        assert store.upsert(payloads, {"va": va, "vb": vb}) == [True] * 20
        with pytest.raises(VersionsChanged):  # every active version's vectors, or nothing is written
            store.upsert([{"item_id": "half", "write_id": "w"}], {"va": va[:1]})
        with pytest.raises(ValueError):
            store.upsert([{"item_id": "flat", "write_id": "w"}], va[:1])  # a plain array: only with one version
        with pytest.raises(ValueError):
            store.upsert([{"item_id": "wrongdim", "write_id": "w"}], {"va": va[:1], "vb": va[:1]})
        assert store.count() == 20 and store.get("half") is None and store.get("wrongdim") is None

        # each version ranks with its own vectors
        for name, vecs in (("va", va), ("vb", vb)):
            by_id = dict(zip(ids, vecs, strict=True))
            hits = store.similar("item-1", 5, ANY, name)
            assert hits is not None and [h.item_id for h in hits] == brute_force(by_id, vecs[1], 5, "item-1")
            answers.append([(h.item_id, round(h.score, 4)) for h in hits])
            query = unit_of(rng, 1, DIMS[name])[0]
            near = store.similar_to_vector(query, 4, ANY, name)
            assert [h.item_id for h in near] == brute_force(by_id, query, 4, None)
        default = store.similar("item-1", 5, ANY)  # None: the serving version
        assert default is not None and [h.item_id for h in default] == [a for a, _ in answers[0]]
        assert store.coverage("vb") == (20, 20)
        with pytest.raises(ModelNotFound):
            store.similar("item-1", 5, ANY, "nope")
        store.put_meta("experiments", {"running": ["e1"]})
    finally:
        store.close()

    # a new model file: a new candidate with no vectors yet
    store = make()
    try:
        opened = store.open({**DIMS, "vc": 4})
        assert opened[-1] == ModelVersion("vc", "candidate", 4)
        assert store.get_meta("experiments") == {"running": ["e1"]} and store.get_meta("other") is None
        assert store.coverage("vc") == (0, 20)
        with pytest.raises(ModelNotReady):
            store.similar("item-1", 5, ANY, "vc")
        missing, cursor, pages = [], None, 0
        while True:
            page, cursor = store.missing("vc", 6, cursor)
            assert len(page) <= 6
            missing += page
            pages += 1
            if cursor is None or pages > 10:
                break
        assert [p["item_id"] for p in missing] == sorted(ids, key=point_id)  # point-id order, each once
        assert all(p["write_id"] == f"w-{p['item_id'][5:]}" for p in missing)

        store.delete("item-3")
        new_vc = unit_of(rng, 1, 4)
        replaced = {"item_id": "item-4", "write_id": "w-4b", "status": "on_sale", "seller_id": "s"}
        store.upsert([replaced], {"va": va[4:5], "vb": vb[4:5], "vc": new_vc})
        store.patch("item-6", {"title": "patched"})  # a patch keeps the write_id: its backfill still applies
        vc = unit_of(rng, 20, 4)
        done = [store.set_vector(i, "vc", vc[n], f"w-{n}") for n, i in enumerate(ids)]
        assert done == [n not in (3, 4) for n in range(20)]  # deleted: skipped; replaced: skipped
        assert store.set_vector("never-written", "vc", vc[0], "w-0") is False
        assert store.set_vector("item-0", "vc", vc[0], None) is False  # None only matches an item without one
        assert store.get("item-3") is None and store.count() == 19  # never resurrected
        assert store.get("item-6") == {**payloads[6], "title": "patched"}  # payload untouched
        assert store.coverage("vc") == (19, 19) and store.missing("vc", 10, None) == ([], None)
        top = store.similar_to_vector(new_vc[0], 1, ANY, "vc")
        assert top[0].item_id == "item-4" and top[0].score > 0.999  # the newer write's vector was kept
        with pytest.raises(ValueError):
            store.set_vector("item-0", "vc", vc[0][:3], "w-0")
        # set_vector wrote only vc: the other versions still rank with their own vectors
        by_va = {i: va[n] for n, i in enumerate(ids) if n != 3}
        assert [h.item_id for h in store.similar("item-1", 5, ANY, "va") or []] == brute_force(
            by_va, va[1], 5, "item-1"
        )
        by_vc = {i: vc[n] for n, i in enumerate(ids) if n not in (3, 4)} | {"item-4": new_vc[0]}
        hits = store.similar("item-0", 5, ANY, "vc")
        assert hits is not None and [h.item_id for h in hits] == brute_force(by_vc, vc[0], 5, "item-0")
        answers.append([(h.item_id, round(h.score, 4)) for h in hits])

        store.promote("vb")
        assert [(v.model_version, v.state) for v in store.versions()] == [
            ("va", "candidate"),
            ("vb", "serving"),
            ("vc", "candidate"),
        ]
        with pytest.raises(ModelServing):
            store.retire("vb")  # the serving version cannot be retired
        store.retire("va")
        assert "va~photos" not in vector_names(store) and {"vb~photos", "vc~photos"} <= vector_names(
            store
        )  # its space is freed
        with pytest.raises(ModelNotFound):
            store.similar("item-1", 5, ANY, "va")
        with pytest.raises(VersionsChanged):  # a retired version takes no vectors any more
            store.upsert([replaced], {"va": va[4:5], "vb": vb[4:5], "vc": new_vc})
        answers.append([(h.item_id, round(h.score, 4)) for h in store.similar("item-1", 5, ANY) or []])
    finally:
        store.close()

    # promote and retire survive a reopen; a retired version needs no model file
    store = make()
    try:
        assert store.open({"vb": 8, "vc": 4}) == [
            ModelVersion("va", "retired", 16),
            ModelVersion("vb", "serving", 8),
            ModelVersion("vc", "candidate", 4),
        ]
        assert "va~photos" not in vector_names(store)
        assert [(h.item_id, round(h.score, 4)) for h in store.similar("item-1", 5, ANY) or []] == answers[-1]
        store.upsert([{"item_id": "late", "write_id": "w-late"}], {"vb": vb[:1], "vc": vc[:1]})
        assert store.coverage("vb") == (20, 20)
    finally:
        store.close()

    # start-up errors: an active version without a file, a version whose dim changed
    for models, words in (({"vb": 8}, ["'vc'", "candidate"]), ({"vb": 9, "vc": 4}, ["'vb'", "8-d", "9-d"])):
        store = make()
        try:
            with pytest.raises(CollectionMismatch) as err:
                store.open(models)
            assert all(w in str(err.value) for w in words), str(err.value)
        finally:
            store.close()
    return answers


def test_model_versions_behave_alike_on_both_stores(tmp_path: Path) -> None:
    edge_answers = run_versions(edge_factory(tmp_path / "edge"))
    server_answers = run_versions(server_factory(tmp_path / "server"))
    assert edge_answers == server_answers


def test_server_collection_from_before_versions_keeps_its_unnamed_vector(tmp_path: Path) -> None:
    """Written with one unnamed vector: opens as that one serving version, and a new version is added.
    (The embedded store's old folders: tests/integration/test_edge_format_compat.py.)"""
    rng = np.random.default_rng(9)
    old = unit_of(rng, 10, 16)
    payloads: list[dict[str, Any]] = [{"item_id": f"o{i}", "write_id": f"w{i}"} for i in range(9)]
    payloads.append({"item_id": "o9"})  # written before write ids existed
    make = server_factory(tmp_path / "server")
    client = QdrantClient(path=str(tmp_path / "server"))
    client.create_collection(
        "items",
        vectors_config=qm.VectorParams(size=16, distance=qm.Distance.COSINE),
        metadata={"lookalike.model_version": "old"},
    )
    points = [
        qm.PointStruct(id=point_id(p["item_id"]), vector=v.tolist(), payload=p)
        for p, v in zip(payloads, old, strict=True)
    ]
    client.upsert("items", points)
    client.close()
    store = make()
    try:
        assert store.open({"old": 16}) == [ModelVersion("old", "serving", 16)]
        before = store.similar("o1", 3, ANY)
        assert before is not None and [h.item_id for h in before] == brute_force(
            {p["item_id"]: v for p, v in zip(payloads, old, strict=True)}, old[1], 3, "o1"
        )
        store.close()
        store = make()
        assert store.open({"old": 16, "new": 8})[-1] == ModelVersion("new", "candidate", 8)
        assert store.similar("o1", 3, ANY) == before and vector_names(store) == {"", "new~photos"}
        with pytest.raises(SinglePhotoVersion):  # the old version keeps one vector per listing
            store.upsert([{"item_id": "two"}], {"old": [unit_of(rng, 2, 16)], "new": [unit_of(rng, 2, 8)]})
        assert store.get("two") is None
        assert store.coverage("new") == (0, 10) and store.coverage("old") == (10, 10)
        assert store.set_vector("o1", "new", unit_of(rng, 1, 8)[0], "w1")
        assert store.set_vector("o9", "new", unit_of(rng, 1, 8)[0], "w9") is False
        assert store.set_vector("o8", "new", unit_of(rng, 1, 8)[0], None) is False  # o8 has a write id
        assert store.set_vector("o9", "new", unit_of(rng, 1, 8)[0], None)  # None: the item has no write id
        store.upsert([{"item_id": "o2", "write_id": "x"}], {"old": old[2:3], "new": unit_of(rng, 1, 8)})
        assert store.coverage("new") == (3, 10) and store.similar("o1", 3, ANY, "old") is not None
    finally:
        store.close()


def two_version_items(store: VectorStore, rng: np.random.Generator) -> None:
    store.open({"v1": 8, "v2": 4})
    payloads = [{"item_id": f"r{i}", "write_id": f"w{i}"} for i in range(6)]
    store.upsert(payloads, {"v1": unit_of(rng, 6, 8), "v2": unit_of(rng, 6, 4)})


def test_a_search_racing_a_retire_on_another_replica_answers_model_not_found() -> None:
    """Replica B still lists v2 as active (it re-reads the registry at most once a second) when replica A
    retires it: B's search then meets a vector name that is gone and must answer 404, never a 5xx."""
    client = QdrantClient(":memory:")
    a, b = ServerStore(client, "items"), ServerStore(client, "items")
    two_version_items(a, np.random.default_rng(5))
    b.open({"v1": 8, "v2": 4})
    assert [h.item_id for h in b.similar("r0", 3, SimilarFilters(), "v2") or []]  # B has v2 in its registry now
    a.retire("v2")
    with pytest.raises(ModelNotFound):
        b.similar("r0", 3, SimilarFilters(), "v2")
    with pytest.raises(ModelNotFound):
        b.similar_to_vector(unit_of(np.random.default_rng(6), 1, 4)[0], 3, SimilarFilters(), "v2")
    assert [h.item_id for h in b.similar("r0", 3, SimilarFilters(), "v1") or []]  # the serving version answers


def test_an_edge_search_that_resolved_its_version_before_a_retire_answers_model_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same race in one process: a search that looked its version up just before retire() deleted the
    vector from the shards (replayed by handing the search the registry row it read before the retire)."""
    import app.store.qdrant_edge.store as edge_module

    store = EdgeStore(tmp_path / "edge", "items")
    try:
        two_version_items(store, np.random.default_rng(7))
        before = edge_module.find(store._state.manifest.versions, "v2")  # what a search read before the retire
        store.retire("v2")
        real_find = edge_module.find
        calls: list[str | None] = []

        def find_as_before_the_retire(versions: Any, version: str | None) -> Any:
            calls.append(version)
            return before if len(calls) == 1 else real_find(versions, version)

        monkeypatch.setattr(edge_module, "find", find_as_before_the_retire)
        with pytest.raises(ModelNotFound):
            store.similar("r0", 3, SimilarFilters(), "v2")
        assert len(calls) == 2  # the stale lookup, then the check after the engine refused the gone vector
    finally:
        store.close()


@pytest.mark.parametrize("factory", [edge_factory, server_factory], ids=["edge", "server"])
def test_get_many_reads_several_items_in_the_order_asked(
    factory: Callable[[Path], Callable[[], VectorStore]], tmp_path: Path
) -> None:
    store = factory(tmp_path)()
    try:
        store.open({"v1": 8})
        payloads = [{"item_id": f"g{i}", "title": f"t{i}", "image_key": f"k{i}"} for i in range(3)]
        store.upsert(payloads, {"v1": unit_of(np.random.default_rng(3), 3, 8)})
        got = store.get_many(["g2", "nowhere", "g0", "g2"])
        assert got == [store.get("g2"), None, store.get("g0"), store.get("g2")]
        assert [p["image_key"] if p else None for p in got] == ["k2", None, "k0", "k2"]
        assert store.get_many([]) == []
    finally:
        store.close()
