"""How sealed shards store and search their vectors (IndexOptions: int8 copy, originals on disk, re-score)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.core.settings import Settings
from app.service.runtime import make_store
from app.store.base import SimilarFilters
from app.store.qdrant_edge import EdgeStore
from app.store.qdrant_edge.builder import IndexOptions

# Small segments (under the HNSW full-scan threshold, 10 MB of vectors) are searched exactly on the
# originals, so these tests check the layout and the served order; the recall of the int8 graph search on
# large shards is measured by bench/ (BENCHMARKS.md, "Catalogue scale").
DIM = 32
N = 600
WAIT_S = 60.0


def clustered(n: int, seed: int = 3) -> np.ndarray:
    """n unit vectors in n // 10 tight clusters, so each has near neighbours to find."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // 10, DIM)).astype(np.float32)
    v = centres[np.arange(n) % len(centres)] + 0.3 * rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def payloads(n: int) -> list[dict[str, Any]]:
    return [
        {"item_id": f"item-{i}", "title": "x", "category": "ab"[i % 3 == 0], "status": "on_sale", "price": float(i)}
        for i in range(n)
    ]


@pytest.fixture
def sealed_store(tmp_path: Path) -> Iterator[Callable[[IndexOptions], tuple[EdgeStore, np.ndarray]]]:
    stores: list[EdgeStore] = []

    def factory(index: IndexOptions) -> tuple[EdgeStore, np.ndarray]:
        store = EdgeStore(tmp_path / f"q{len(stores)}", "items", hot_max=N // 2, builder_nice=0, index=index)
        store.open({"m-1": DIM})
        stores.append(store)
        vectors = clustered(N)
        for start in range(0, N, N // 2):
            rows = range(start, start + N // 2)
            store.upsert([payloads(N)[i] for i in rows], {"m-1": [vectors[i][None, :] for i in rows]})
        assert store.wait_for_maintenance(WAIT_S)
        assert sorted(s["role"] for s in store.stats()["shards"] if s["points"]) == ["sealed"]
        return store, vectors

    yield factory
    for s in stores:
        s.close()


def quantized_files(store: EdgeStore) -> list[Path]:
    return sorted(store.root.glob("shard-*/segments/*/vector_storage-*/quantized.data"))


def memory_tiers(store: EdgeStore) -> tuple[set[Any], set[Any]]:
    """The sealed shards' id tracker tiers and their payload indexes' tiers (None: Qdrant's default, the heap)."""
    sealed = [store.root / s["name"] for s in store.stats()["shards"] if s["role"] == "sealed"]
    assert sealed
    ids = {json.loads((d / "edge_config.json").read_text()).get("id_tracker_memory") for d in sealed}
    indexes = {
        field.get("memory")
        for d in sealed
        for config in d.glob("segments/*/payload_index/config.json")
        for field in json.loads(config.read_text())["indexed_fields"].values()
    }
    return ids, indexes


def test_int8_shards_serve_exact_scores_in_exact_order(sealed_store: Callable[..., Any]) -> None:
    store, vectors = sealed_store(IndexOptions(quantization="int8", vectors_on_disk=True))
    assert quantized_files(store), "a sealed shard built with int8 holds the quantised copy"
    # with the originals on disk the id tracker and payload indexes are mapped files too (shared by readers)
    assert memory_tiers(store) == ({"cached"}, {"cached"})
    for q in (0, 17, 233, N - 1):
        hits = store.similar(f"item-{q}", 5, SimilarFilters())
        assert hits is not None and len(hits) == 5
        exact = vectors @ vectors[q]
        exact[q] = -2.0
        want = [f"item-{i}" for i in np.argsort(-exact)[:5]]
        assert [h.item_id for h in hits] == want
        # the served score is the exact cosine of the float32 vectors (never an int8 approximation)
        for h in hits:
            assert h.score == pytest.approx(float(exact[int(h.item_id.split("-")[1])]), abs=1e-5)
        # and the mapped payload indexes filter exactly
        hits = store.similar(f"item-{q}", 5, SimilarFilters(category="b", max_price=400.0))
        exact[[i for i in range(N) if i % 3 != 0 or i > 400]] = -2.0
        assert hits is not None and [h.item_id for h in hits] == [f"item-{i}" for i in np.argsort(-exact)[:5]]


def test_quantization_none_keeps_float32_only(sealed_store: Callable[..., Any]) -> None:
    store, vectors = sealed_store(IndexOptions(quantization="none", vectors_on_disk=False))
    assert quantized_files(store) == []
    assert memory_tiers(store) == ({None}, {None})  # everything on the heap, as before
    hits = store.similar("item-5", 3, SimilarFilters())
    exact = vectors @ vectors[5]
    exact[5] = -2.0
    assert hits is not None and [h.item_id for h in hits] == [f"item-{i}" for i in np.argsort(-exact)[:3]]


def test_settings_reach_the_store(tmp_path: Path) -> None:
    settings = Settings(
        qdrant_path=tmp_path / "qdrant",
        edge_quantization="none",
        edge_vectors_on_disk=False,
        edge_hnsw_ef=64,
        edge_oversampling=3.0,
    )
    store = make_store(settings)
    assert isinstance(store, EdgeStore)
    wanted = IndexOptions(quantization="none", vectors_on_disk=False, hnsw_ef=64, oversampling=3.0)
    assert store._state.config.index == wanted
