"""EdgeStore.bulk_load (app/store/qdrant_edge/bulk.py) on the real engine with real builder subprocesses.

A bulk load builds each point into an HNSW index once (sealed shards of `shard_points`), where the live
upsert path builds it once per freeze and again in every size-tiered merge.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.store.base import SimilarFilters
from app.store.qdrant_edge import EdgeStore
from app.store.qdrant_edge.bulk import BulkRow
from tests.live import session_processes, start_process

DIM = 16
REPO = Path(__file__).resolve().parents[2]
WAIT_S = 60.0
ANY = SimilarFilters(include_sold=True)


def catalogue(n: int, title: str = "v1", seed: int = 0) -> tuple[list[dict[str, Any]], np.ndarray]:
    """N payloads as the service stores them, and unit vectors where item i + n/2 is a near-duplicate of item i."""
    rng = np.random.default_rng(seed)
    half = rng.standard_normal((n // 2, DIM)).astype(np.float32)
    vectors = np.concatenate([half, half + 0.01 * rng.standard_normal(half.shape).astype(np.float32)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    payloads = [
        {
            "item_id": f"item-{i}",
            "title": f"{title} thing {i}",
            "category": f"c{i % 3}",
            "price": float(i % 50),
            "seller_id": f"s{i % 5}",
            "status": "on_sale",
            "model_version": "m-1",
        }
        for i in range(n)
    ]
    return payloads, vectors


def rows(payloads: list[dict[str, Any]], vectors: np.ndarray) -> Iterator[BulkRow]:
    for p, v in zip(payloads, vectors, strict=True):
        yield p, {"m-1": v}


def sealed_points(store: EdgeStore) -> list[int]:
    return sorted(s["points"] for s in store.stats()["shards"] if s["role"] == "sealed")


def leftovers(store: EdgeStore) -> list[str]:
    return sorted(p.name for p in store.root.iterdir() if p.name.startswith("tmp-"))


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Callable[..., EdgeStore]]:
    stores: list[EdgeStore] = []

    def factory(**kw: Any) -> EdgeStore:
        kw.setdefault("builder_nice", 0)  # a shared CI box: do not let a niced build starve
        store = EdgeStore(tmp_path / "qdrant", "items", **kw)
        store.open({"m-1": DIM})
        stores.append(store)
        return store

    yield factory
    for s in stores:
        s.close()


def test_bulk_load_indexes_each_point_once(open_store: Callable[..., EdgeStore]) -> None:
    # max_shard_points 1000: no two of the loaded shards may merge (1000 + 1000, and 500 alone in its tier)
    store = open_store(hot_max=50, max_shard_points=1000)
    payloads, vectors = catalogue(2500)
    seen: list[int] = []
    report = store.bulk_load(rows(payloads, vectors), shard_points=1000, progress=seen.append)

    assert (report.items, report.shards, report.points_built) == (2500, 3, 2500)
    assert seen == sorted(set(seen)) and seen[-1] == 2500 and 1000 in seen
    stats = store.stats()
    assert stats["points_built"] == 2500
    assert sealed_points(store) == [500, 1000, 1000]
    assert all(s["indexed_vectors"] == s["points"] for s in stats["shards"] if s["role"] == "sealed")
    assert stats["shards"][0]["role"] == "hot"  # the hot shard stays the newest
    assert store.count() == 2500
    assert store.get_many([p["item_id"] for p in payloads]) == payloads
    for i in (0, 7, 499, 600, 1249):  # each item's near-duplicate lies in another shard
        assert [h.item_id for h in store.similar(f"item-{i}", 1, ANY) or []] == [f"item-{i + 1250}"]
        assert [h.item_id for h in store.similar(f"item-{i + 1250}", 1, ANY) or []] == [f"item-{i}"]
    assert leftovers(store) == []

    assert store.wait_for_maintenance(WAIT_S)
    assert store.stats()["points_built"] == 2500  # nothing was rebuilt
    store.upsert([{"item_id": "item-0", "title": "live"}], vectors[:1])  # the hot shard takes writes, and wins
    assert store.get("item-0") == {"item_id": "item-0", "title": "live"} and store.count() == 2500
    assert store.stats()["shards"][0]["points"] == 1 and sealed_points(store) == [500, 999, 1000]


def test_live_upserts_index_each_point_several_times(open_store: Callable[..., EdgeStore]) -> None:
    store = open_store(hot_max=100)
    payloads, vectors = catalogue(400)
    for i in range(0, 400, 100):  # each batch fills the hot shard, which is frozen and built
        store.upsert(payloads[i : i + 100], vectors[i : i + 100])
        assert store.wait_for_maintenance(WAIT_S)
    # every point is built when its hot shard is sealed, then again in each merge (100 + 100, 200 + 200)
    stats = store.stats()
    assert (stats["builds"], stats["merges"], stats["points_built"]) == (4, 3, 3 * 400)
    assert sealed_points(store) == [400] and store.count() == 400


def test_reload_replaces_items_and_drops_emptied_shards(open_store: Callable[..., EdgeStore]) -> None:
    store = open_store(hot_max=50, max_shard_points=500)  # no merge of two 300-point shards
    payloads, vectors = catalogue(600)
    store.bulk_load(rows(payloads, vectors), shard_points=300)
    store.upsert([payloads[5]], vectors[5:6])  # a live copy of one of them, in the hot shard
    first = [s["name"] for s in store.stats()["shards"] if s["role"] == "sealed"]

    new_payloads, new_vectors = catalogue(600, title="v2", seed=1)
    report = store.bulk_load(rows(new_payloads, new_vectors), shard_points=300)

    assert report.items == 600 and store.count() == 600
    assert store.get_many([p["item_id"] for p in payloads]) == new_payloads
    stats = store.stats()
    assert sealed_points(store) == [300, 300]
    assert not {s["name"] for s in stats["shards"]} & set(first)  # the emptied shards are gone
    assert not any((store.root / name).exists() for name in first)
    assert stats["shards"][0]["role"] == "hot" and stats["shards"][0]["points"] == 0
    assert stats["points_built"] == 1200
    assert [h.item_id for h in store.similar("item-3", 1, ANY) or []] == ["item-303"]


def test_bulk_load_keeps_every_photo(open_store: Callable[..., EdgeStore]) -> None:
    store = open_store(hot_max=50)
    rng = np.random.default_rng(3)
    photos = [rng.standard_normal((1 + i % 3, DIM)).astype(np.float32) for i in range(30)]
    photos = [p / np.linalg.norm(p, axis=1, keepdims=True) for p in photos]
    given = [({"item_id": f"item-{i}"}, {"m-1": p if i % 3 else p[0]}) for i, p in enumerate(photos)]  # [dim]: one
    assert store.bulk_load(given, shard_points=100).items == 30
    for i in (0, 4, 5, 29):  # 1, 2, 3 and 3 photos
        for j in range(len(photos[i])):
            hit = store.similar_to_vector(photos[i][j], 1, ANY)[0]
            assert (hit.item_id, hit.matched.photo) == (f"item-{i}", j)
            assert hit.score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"m-1": np.zeros(DIM + 1, dtype=np.float32)}, r"row 7: .*17"),
        ({}, r"row 7: .*active versions"),
        ({"m-1": np.zeros(DIM, dtype=np.float32), "m-2": np.zeros(DIM, dtype=np.float32)}, "row 7"),
    ],
    ids=["wrong-dim", "missing-version", "unknown-version"],
)
def test_bad_row_raises_and_swaps_nothing(open_store: Callable[..., EdgeStore], bad: Any, message: str) -> None:
    store = open_store(hot_max=50)
    payloads, vectors = catalogue(20)
    given = list(rows(payloads, vectors))
    given[7] = (payloads[7], bad)
    before = store.stats()["shards"]
    with pytest.raises(ValueError, match=message):
        store.bulk_load(given, shard_points=10)
    assert store.stats()["shards"] == before and store.count() == 0
    assert store.stats()["points_built"] == 0
    assert leftovers(store) == []


def test_bad_row_after_a_whole_shard_keeps_that_shard(open_store: Callable[..., EdgeStore]) -> None:
    store = open_store(hot_max=50)
    payloads, vectors = catalogue(20)
    given = list(rows(payloads, vectors))
    given[13] = ({"title": "no item id"}, given[13][1])
    with pytest.raises(ValueError, match=r"row 13: .*item_id"):
        store.bulk_load(given, shard_points=10)
    assert sealed_points(store) == [10] and store.count() == 10
    assert leftovers(store) == []


LOADER = textwrap.dedent(
    """
    import sys, numpy as np
    from pathlib import Path
    from app.store.qdrant_edge import EdgeStore
    from tests.integration.test_store_bulk import catalogue, rows
    root, n, title = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    store = EdgeStore(root, "items", hot_max=50, max_shard_points=150, builder_nice=0)
    store.open({"m-1": 16})
    def told(source):
        for i, row in enumerate(source):
            print("ROW", i, flush=True)
            yield row
    store.bulk_load(told(rows(*catalogue(n, title=title))), shard_points=100)
    print("DONE", flush=True)
    """
)


def _kill_at(proc: subprocess.Popen[str], last_line: str, *, in_build: bool) -> list[str]:
    """Read the loader's lines up to `last_line`, wait for its `builder bulk` child if `in_build`, SIGKILL the
    loader; returns the lines read."""
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and last_line not in lines:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
    assert last_line in lines, lines[-3:]
    while (
        in_build and time.monotonic() < deadline and not any("builder bulk" in p for p in session_processes(proc.pid))
    ):
        time.sleep(0.02)
    assert not in_build or any("builder bulk" in p for p in session_processes(proc.pid)), "no builder bulk child"
    proc.kill()
    proc.communicate()
    while session_processes(proc.pid) and time.monotonic() < deadline:  # the builder dies with its parent
        time.sleep(0.05)
    assert session_processes(proc.pid) == []
    return lines


def _loader(root: Path, n: int, title: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = [sys.executable, "-c", LOADER, str(root), str(n), title]
    return start_process(code, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)


def _reopened(root: Path) -> EdgeStore:
    store = EdgeStore(root, "items", hot_max=50, max_shard_points=150, builder_nice=0)  # as LOADER: no merges
    store.open({"m-1": DIM})
    assert leftovers(store) == []  # staging folders and unswapped shards were removed
    return store


def test_kill9_during_a_bulk_load_leaves_whole_shards(tmp_path: Path) -> None:
    root = tmp_path / "qdrant"
    # staging the third shard: the first two are in
    lines = _kill_at(_loader(root, 300, "v1"), "ROW 250", in_build=False)
    assert "DONE" not in lines
    store = _reopened(root)
    try:
        assert store.count() == 200 and sealed_points(store) == [100, 100]
        assert store.get("item-199") is not None and store.get("item-200") is None
    finally:
        store.close()

    # again, killed while the builder makes the last shard
    lines = _kill_at(_loader(root, 300, "v2"), "ROW 299", in_build=True)
    assert "DONE" not in lines
    store = _reopened(root)
    try:
        assert store.count() == 200 and sealed_points(store) == [100, 100]  # the v1 shards were emptied, dropped
        assert store.get("item-0")["title"] == "v2 thing 0"  # type: ignore[index]
        assert store.get("item-299") is None

        # the same load once more, to its end: the same ids, so the same items
        report = store.bulk_load(rows(*catalogue(300, title="v2")), shard_points=100)
        assert store.wait_for_maintenance(WAIT_S)
        assert report.items == 300 and store.count() == 300 and sealed_points(store) == [100, 100, 100]
        assert store.get_many(["item-0", "item-299"]) == [catalogue(300, title="v2")[0][i] for i in (0, 299)]
    finally:
        store.close()
