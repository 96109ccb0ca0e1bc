"""One sequence of writes, patches, deletes and queries on both stores must give the same answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient

from app.store.base import SimilarFilters, VectorStore
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
    store.ensure_collection(DIM, "test-model-v1")
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
    return answers


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
