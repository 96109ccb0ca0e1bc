"""One sequence of writes, patches, deletes and queries on both stores must give the same answers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient

from app.store.base import SimilarFilters, VectorStore, point_id
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
