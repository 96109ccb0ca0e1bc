"""EdgeStore (app/store/qdrant_edge/) against the real Qdrant Edge engine and real builder subprocesses.

Small dims and a small hot_max make freezes, out-of-process builds and merges happen within seconds.
Sealed shards this small are searched exactly by Qdrant (below full_scan_threshold), so results must
match a brute-force numpy ranking exactly (ids and order), before and after every build and merge.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.core.errors import ModelNotReady, StoreUnavailable
from app.store.base import CollectionMismatch, SimilarFilters
from app.store.qdrant_edge import EdgeStore
from app.store.versions import PHOTOS_SUFFIX
from tests.live import kill_after, start_process

DIM = 16
REPO = Path(__file__).resolve().parents[2]
WAIT_S = 60.0


def make_items(start: int, n: int, seed: int = 0) -> tuple[list[dict[str, Any]], np.ndarray]:
    rng = np.random.default_rng(seed + start)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    payloads = [
        {
            "item_id": f"item-{i}",
            "title": f"thing {i}",
            "category": f"c{i % 3}",
            "price": float(i % 50),
            "seller_id": f"s{i % 5}",
            "status": "sold" if i % 7 == 0 else "on_sale",
        }
        for i in range(start, start + n)
    ]
    return payloads, vectors


class Mirror:
    """What the store should hold, kept in plain Python; ranks results by brute force."""

    def __init__(self) -> None:
        self.payloads: dict[str, dict[str, Any]] = {}
        self.vectors: dict[str, np.ndarray] = {}

    def upsert(self, payloads: list[dict[str, Any]], vectors: np.ndarray) -> None:
        for p, v in zip(payloads, vectors, strict=True):
            self.payloads[p["item_id"]] = dict(p)
            self.vectors[p["item_id"]] = v

    def delete(self, item_id: str) -> None:
        self.payloads.pop(item_id, None)
        self.vectors.pop(item_id, None)

    def patch(self, item_id: str, fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            if value is None:
                self.payloads[item_id].pop(key, None)
            else:
                self.payloads[item_id][key] = value

    def similar(self, item_id: str, k: int, f: SimilarFilters) -> list[str]:
        me = self.payloads[item_id]
        ids = []
        for other, p in self.payloads.items():
            if other == item_id:
                continue
            if f.category is not None and p.get("category") != f.category:
                continue
            price = p.get("price")
            if f.min_price is not None and (price is None or price < f.min_price):
                continue
            if f.max_price is not None and (price is None or price > f.max_price):
                continue
            if not f.include_sold and p.get("status") == "sold":
                continue
            if f.exclude_same_seller and me.get("seller_id") is not None and p.get("seller_id") == me["seller_id"]:
                continue
            ids.append(other)
        if not ids:
            return []
        scores = np.stack([self.vectors[i] for i in ids]) @ self.vectors[item_id]
        ranked = sorted(zip(ids, scores.tolist(), strict=True), key=lambda t: (-t[1], t[0]))
        return [i for i, _ in ranked[:k]]


FILTERS = [
    SimilarFilters(),
    SimilarFilters(category="c1"),
    SimilarFilters(min_price=10.0),
    SimilarFilters(max_price=20.0),
    SimilarFilters(min_price=5.0, max_price=25.0, category="c2"),
    SimilarFilters(include_sold=True),
    SimilarFilters(exclude_same_seller=True),
    SimilarFilters(category="c0", include_sold=True, exclude_same_seller=True),
]


def assert_matches(store: EdgeStore, mirror: Mirror, query_ids: list[str], k: int = 7) -> None:
    for qid in query_ids:
        for f in FILTERS:
            hits = store.similar(qid, k, f)
            assert hits is not None
            got = [h.item_id for h in hits]
            assert got == mirror.similar(qid, k, f), (qid, f)
            assert qid not in got
            for h in hits:
                assert h.payload == mirror.payloads[h.item_id]
                expected = float(mirror.vectors[h.item_id] @ mirror.vectors[qid])
                assert h.score == pytest.approx(expected, abs=1e-5)


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Callable[..., EdgeStore]]:
    stores: list[EdgeStore] = []

    def factory(**kw: Any) -> EdgeStore:
        kw.setdefault("builder_nice", 0)  # a shared CI box: do not let a niced build starve
        store = EdgeStore(tmp_path / "qdrant", kw.pop("collection", "items"), **kw)
        store.open({kw.pop("model_version", "m-1"): DIM})
        stores.append(store)
        return store

    yield factory
    for s in stores:
        s.close()


def shard_roles(store: EdgeStore) -> list[str]:
    return [s["role"] for s in store.stats()["shards"]]


# ---------------------------------------------------------------- basics


def test_crud_basics(open_store: Callable[..., EdgeStore]) -> None:
    store = open_store()
    assert store.ready()
    payloads, vectors = make_items(0, 5)
    assert store.upsert(payloads, vectors) == [True] * 5
    assert store.count() == 5
    assert store.get("item-3") == payloads[3]
    assert store.get("nope") is None

    # replace: whole payload and vector, not created; a repeated item in one batch: last one wins
    new_payload = {"item_id": "item-3", "category": "c9", "price": 1.5}
    created = store.upsert([new_payload, {"item_id": "x-new"}, {"item_id": "x-new", "price": 2.0}], vectors[:3])
    assert created == [False, True, False]
    assert store.get("item-3") == new_payload
    assert store.get("x-new") == {"item_id": "x-new", "price": 2.0}
    assert store.count() == 6

    patched = store.patch("item-1", {"price": 99.0, "status": None, "title": "renamed"})
    expected = {**payloads[1], "price": 99.0, "title": "renamed"}
    del expected["status"]
    assert patched == expected
    assert store.get("item-1") == expected
    assert store.patch("nope", {"price": 1.0}) is None
    with pytest.raises(ValueError):
        store.patch("item-1", {"item_id": "other"})

    assert store.delete("item-2") is True
    assert store.delete("item-2") is False
    assert store.get("item-2") is None
    assert store.similar("item-2", 3, SimilarFilters()) is None
    assert store.count() == 5

    with pytest.raises(ValueError):
        store.upsert([{"item_id": "bad"}], np.zeros((1, DIM + 1), dtype=np.float32))
    with pytest.raises(ValueError):
        store.upsert([{"title": "no id"}], np.zeros((1, DIM), dtype=np.float32))


def test_similar_filters_and_self_exclusion(open_store: Callable[..., EdgeStore]) -> None:
    store = open_store()
    mirror = Mirror()
    payloads, vectors = make_items(0, 60)
    payloads[4].pop("seller_id")  # an item without seller: exclude_same_seller excludes nothing
    store.upsert(payloads, vectors)
    mirror.upsert(payloads, vectors)
    assert_matches(store, mirror, ["item-0", "item-4", "item-13", "item-21"])
    # k larger than the candidates: everything that passes the filter, never the item itself
    hits = store.similar("item-1", 100, SimilarFilters(category="c1", include_sold=True))
    assert hits is not None
    assert sorted(h.item_id for h in hits) == sorted(
        i for i, p in mirror.payloads.items() if p["category"] == "c1" and i != "item-1"
    )
    # the item itself is excluded even when an identical vector exists
    store.upsert([{"item_id": "twin", "category": "c0"}], vectors[:1])
    hits = store.similar("item-0", 1, SimilarFilters(include_sold=True))
    assert hits is not None and hits[0].item_id == "twin"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_mismatch_raises(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path, "items")
    store.open({"m-1": DIM})
    store.open({"m-1": DIM})  # idempotent
    with pytest.raises(CollectionMismatch):
        store.open({"m-2": DIM})
    store.close()
    for dim, version in ((DIM * 2, "m-1"), (DIM, "m-2")):
        other = EdgeStore(tmp_path, "items")
        with pytest.raises(CollectionMismatch) as err:
            other.open({version: dim})
        assert "LOOKALIKE_COLLECTION" in str(err.value) and "LOOKALIKE_MODEL_PATH" in str(err.value)
        assert not other.ready()
    again = EdgeStore(tmp_path, "items")  # the failed opens released the directory
    again.open({"m-1": DIM})
    second = EdgeStore(tmp_path, "items")
    with pytest.raises(StoreUnavailable):
        second.open({"m-1": DIM})  # one open store per collection directory
    again.close()
    with pytest.raises(StoreUnavailable):
        again.get("item-1")


# ---------------------------------------------------------------- builds and merges


def test_results_identical_through_builds_and_merges_and_reopen(
    open_store: Callable[..., EdgeStore], tmp_path: Path
) -> None:
    store = open_store(hot_max=100, merge_fanin=2)
    mirror = Mirror()
    queries = ["item-1", "item-50", "item-120", "item-199"]

    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:  # reads across every swap must never fail
        while not stop.is_set():
            try:
                store.similar("item-1", 5, SimilarFilters())
                store.count()
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)
                return

    # Hold the first build until the answers from the plain (brute-force) shard are recorded.
    release = threading.Event()
    store._maintenance_hook = lambda phase, info: phase == "copied" and release.wait(WAIT_S)
    assert store.wait_for_maintenance(WAIT_S)  # a spare is ready, so 100 points freeze at once
    payloads, vectors = make_items(0, 100)
    store.upsert(payloads, vectors)
    mirror.upsert(payloads, vectors)
    assert shard_roles(store) == ["hot", "frozen"]
    plain = {(q, f): store.similar(q, 7, f) for q in ("item-1", "item-50", "item-95") for f in FILTERS}
    release.set()
    assert store.wait_for_maintenance(WAIT_S)
    assert shard_roles(store) == ["hot", "sealed"]
    for (q, f), hits in plain.items():  # the same 100 items, now HNSW-indexed: identical answers
        after = store.similar(q, 7, f)
        assert after is not None and hits is not None
        assert [h.item_id for h in after] == [h.item_id for h in hits]
        assert [h.score for h in after] == pytest.approx([h.score for h in hits], abs=1e-6)
    t = threading.Thread(target=reader)
    t.start()
    try:
        assert store.wait_for_maintenance(WAIT_S)  # the spare hot shard is ready to take over
        payloads, vectors = make_items(100, 100)
        for i in range(0, 100, 20):  # in batches, like the service
            store.upsert(payloads[i : i + 20], vectors[i : i + 20])
        mirror.upsert(payloads, vectors)
        assert store.wait_for_maintenance(WAIT_S)  # second build, then the two merge (fanin 2)
    finally:
        stop.set()
        t.join()
    assert not errors, errors

    stats = store.stats()
    assert stats["builds"] == 2 and stats["merges"] == 1, stats
    assert shard_roles(store) == ["hot", "sealed"]
    sealed = [s for s in stats["shards"] if s["role"] == "sealed"]
    assert sealed and all(s["indexed_vectors"] == s["points"] for s in sealed), stats
    assert stats["failed_jobs"] == 0
    assert store.count() == 200
    assert_matches(store, mirror, queries)

    store.close()
    reopened = open_store(hot_max=100, merge_fanin=2)
    assert reopened.count() == 200
    assert reopened.get("item-150") == mirror.payloads["item-150"]
    assert_matches(reopened, mirror, queries)
    names = {p.name for p in (tmp_path / "qdrant" / "items").iterdir()}
    manifest = json.loads((tmp_path / "qdrant" / "items" / "manifest.json").read_text())
    extra = names - {"manifest.json", ".lock"} - {s["name"] for s in manifest["shards"]}
    assert len(extra) <= 1 and all(n.startswith("shard-") for n in extra), names  # at most the spare


def hold_builds(store: EdgeStore) -> tuple[threading.Event, threading.Event, list[str]]:
    """Build jobs stop at their "copied" and "built" steps (`held` set) until `release` is set; `phases`
    records every step of every job."""
    held, release = threading.Event(), threading.Event()
    phases: list[str] = []

    def hook(phase: str, info: dict[str, Any]) -> None:
        phases.append(phase)
        if phase in ("copied", "built") and info["kind"] == "build":
            held.set()
            assert release.wait(WAIT_S)

    store._maintenance_hook = hook
    return held, release, phases


def test_writes_during_a_build_survive_the_swap(open_store: Callable[..., EdgeStore]) -> None:
    store = open_store(hot_max=50, merge_fanin=10)
    mirror = Mirror()
    held, release, phases = hold_builds(store)
    payloads, vectors = make_items(0, 60)
    store.upsert(payloads, vectors)  # 60 >= hot_max: frozen, and its build starts
    mirror.upsert(payloads, vectors)

    round_ops = [
        # (phase the job is held in, the writes issued while it is held)
        ("copied", ["item-1", "item-2", "item-3"]),
        ("built", ["item-11", "item-12", "item-13"]),
    ]
    for phase, (gone, patched, replaced) in round_ops:
        assert held.wait(WAIT_S), phases
        held.clear()
        assert phases[-1] == phase
        assert store.delete(gone)
        mirror.delete(gone)
        fields = {"status": "sold", "title": None, "price": 123.0}
        store.patch(patched, fields)
        mirror.patch(patched, fields)
        new_p, new_v = make_items(1000, 1, seed=7)
        new_p[0]["item_id"] = replaced
        assert store.upsert(new_p, new_v) == [False]
        mirror.upsert(new_p, new_v)
        # visible at once, before the swap
        assert store.get(gone) is None
        assert store.get(patched) == mirror.payloads[patched]
        assert_matches(store, mirror, [patched, replaced], k=5)
        release.set()
        time.sleep(0.05)
        release.clear()
    release.set()
    assert store.wait_for_maintenance(WAIT_S)
    assert store.stats()["builds"] >= 1
    assert "sealed" in shard_roles(store)
    assert store.count() == len(mirror.payloads)
    for item_id, payload in mirror.payloads.items():
        assert store.get(item_id) == payload
    assert store.get("item-1") is None and store.get("item-11") is None
    assert_matches(store, mirror, ["item-2", "item-3", "item-12", "item-13", "item-30"], k=5)


def test_killed_builder_leaves_store_consistent_and_retries(
    open_store: Callable[..., EdgeStore], tmp_path: Path
) -> None:
    store = open_store(hot_max=50)
    mirror = Mirror()
    killed: list[int] = []

    def hook(phase: str, info: dict[str, Any]) -> None:
        if phase == "spawned" and not killed:
            killed.append(info["pid"])
            os.kill(info["pid"], signal.SIGKILL)

    store._maintenance_hook = hook
    payloads, vectors = make_items(0, 60)
    store.upsert(payloads, vectors)
    mirror.upsert(payloads, vectors)
    assert store.wait_for_maintenance(WAIT_S)
    stats = store.stats()
    assert killed and stats["failed_jobs"] >= 1 and stats["builds"] == 1, stats
    assert store.count() == 60
    assert_matches(store, mirror, ["item-5", "item-40"])
    names = {p.name for p in (tmp_path / "qdrant" / "items").iterdir()}
    assert not any(n.startswith("tmp-") for n in names), names


# ---------------------------------------------------------------- crashes of the serving process

WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from pathlib import Path
    from app.store.qdrant_edge import EdgeStore
    root, start, dim = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    store = EdgeStore(root, "items", hot_max=40, merge_fanin=2)
    store.open({"m-1": dim})
    rng = np.random.default_rng(start)
    i = start
    while True:
        v = rng.standard_normal((4, dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        ids = [f"k-{j}" for j in range(i, i + 4)]
        store.upsert([{"item_id": x, "price": 1.0} for x in ids], v)
        print("U", *ids, flush=True)
        if i % 20 == 0 and i > start:
            # lower case: about to do it (may or may not happen if killed); upper case: acknowledged
            print("p", f"k-{i - 3}", flush=True)
            store.patch(f"k-{i - 3}", {"price": 2.0})
            print("P", f"k-{i - 3}", flush=True)
            print("d", f"k-{i - 2}", flush=True)
            store.delete(f"k-{i - 2}")
            print("D", f"k-{i - 2}", flush=True)
        i += 4
    """
)

HOLDER = textwrap.dedent(
    """
    import sys, time, numpy as np
    from pathlib import Path
    from app.store.qdrant_edge import EdgeStore
    root, dim = Path(sys.argv[1]), int(sys.argv[2])
    store = EdgeStore(root, "items", hot_max=30)
    store.open({"m-1": dim})
    def hold(phase, info):
        if phase == "built":
            print("HELD", info["target"], flush=True)
            time.sleep(600)
    store._maintenance_hook = hold
    v = np.eye(dim, dtype=np.float32)[np.arange(40) % dim] + 0.01 * np.arange(40)[:, None]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    store.upsert([{"item_id": f"h-{i}"} for i in range(40)], v.astype(np.float32))
    print("ACK", flush=True)
    time.sleep(600)
    """
)


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return start_process([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)


def test_kill9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    root = tmp_path / "qdrant"
    present: set[str] = set()
    deleted: set[str] = set()
    patched: set[str] = set()
    in_doubt: set[str] = set()  # a patch or delete was under way when the process died
    start = 0
    for round_ in range(3):
        proc = _python(WRITER, str(root), str(start), str(DIM))
        lines = kill_after(proc, 1.0 + 0.7 * round_)
        for line in lines:
            kind, *ids = line.split()
            if kind == "U":
                present.update(ids)
            elif kind == "P":
                patched.update(ids)
            elif kind == "D":
                deleted.update(ids)
            elif kind in ("p", "d"):
                in_doubt.update(ids)
        in_doubt -= patched | deleted
        assert present, "the writer acknowledged nothing"
        start += 4 * len([ln for ln in lines if ln.startswith("U")]) + 400  # fresh ids next round

        store = EdgeStore(root, "items", hot_max=40, merge_fanin=2)
        store.open({"m-1": DIM})
        try:
            for item_id in sorted(present - deleted - in_doubt):
                payload = store.get(item_id)
                assert payload is not None, f"acknowledged {item_id} lost after kill -9 (round {round_})"
                assert payload["price"] == (2.0 if item_id in patched else 1.0)
            for item_id in deleted:
                assert store.get(item_id) is None, f"acknowledged delete of {item_id} lost"
            assert store.similar(sorted(present - deleted)[0], 3, SimilarFilters()) is not None
        finally:
            store.close()


def test_crash_while_a_build_is_held_then_recovery(tmp_path: Path) -> None:
    root = tmp_path / "qdrant"
    proc = _python(HOLDER, str(root), str(DIM))
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and not any(s.startswith("HELD") for s in seen):
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line.strip())
    proc.kill()
    proc.communicate()
    assert "ACK" in seen and any(s.startswith("HELD") for s in seen), seen
    target = next(s for s in seen if s.startswith("HELD")).split()[1]
    assert (root / "items" / target).exists()  # built, moved into place, never swapped in

    store = EdgeStore(root, "items", hot_max=30)
    store.open({"m-1": DIM})
    try:
        assert not (root / "items" / target).exists()  # garbage-collected on open
        assert store.count() == 40
        assert store.wait_for_maintenance(WAIT_S)
        assert "sealed" in shard_roles(store)
        assert store.count() == 40
        assert all(store.get(f"h-{i}") == {"item_id": f"h-{i}"} for i in range(40))
    finally:
        store.close()


# ---------------------------------------------------------------- model versions (named vectors)


def unit_vector(seed: int, dim: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def shard_vectors(store: EdgeStore) -> list[set[str]]:
    """The model versions each shard holds vectors of (new versions keep every photo: `<version>~photos`)."""
    with store._shard_set.reading() as shards:
        return [{name.removesuffix(PHOTOS_SUFFIX) for name in s.vectors()} for s in shards]


def test_version_changes_during_a_build_survive_the_swap(open_store: Callable[..., EdgeStore]) -> None:
    """A version added, backfilled and another retired while a build job copies and builds: the swapped-in
    shard has exactly the active vectors, with every vector written meanwhile."""
    store = open_store(hot_max=50, merge_fanin=10)
    held, release, phases = hold_builds(store)
    payloads, vectors = make_items(0, 60)
    for p in payloads:
        p["write_id"] = f"w-{p['item_id']}"
    store.upsert(payloads, vectors)  # 60 >= hot_max: frozen, and its build starts
    m2 = {p["item_id"]: unit_vector(n, 8) for n, p in enumerate(payloads)}
    m3 = {p["item_id"]: unit_vector(1000 + n, 4) for n, p in enumerate(payloads)}

    assert held.wait(WAIT_S) and phases[-1] == "copied"
    held.clear()
    store.open({"m-1": DIM, "m-2": 8})  # a new model file: every shard gets the vector, the copies do not
    for item_id in list(m2)[:30]:
        assert store.set_vector(item_id, "m-2", m2[item_id], f"w-{item_id}")
    assert store.coverage("m-2") == (30, 60)
    release.set()
    time.sleep(0.05)
    release.clear()

    assert held.wait(WAIT_S) and phases[-1] == "built"  # built by a builder that knew m-2
    store.open({"m-1": DIM, "m-2": 8, "m-3": 4})
    for item_id in list(m3)[10:40]:
        assert store.set_vector(item_id, "m-3", m3[item_id], f"w-{item_id}")
    assert store.set_vector("item-11", "m-3", m3["item-11"], "an older write") is False
    store.retire("m-2")
    assert store.delete("item-12")
    release.set()
    assert store.wait_for_maintenance(WAIT_S)

    assert store.stats()["builds"] >= 1 and "sealed" in shard_roles(store)
    assert all(names == {"m-1", "m-3"} for names in shard_vectors(store)), shard_vectors(store)
    assert store.coverage("m-3") == (29, 59)
    expected = {i: v for i, v in list(m3.items())[10:40] if i != "item-12"}
    for item_id in ("item-10", "item-20", "item-39"):
        hits = store.similar(item_id, 5, SimilarFilters(include_sold=True), "m-3")
        scores = {i: float(v @ expected[item_id]) for i, v in expected.items() if i != item_id}
        assert hits is not None and [h.item_id for h in hits] == sorted(scores, key=lambda i: (-scores[i], i))[:5]
    with pytest.raises(ModelNotReady):
        store.similar("item-45", 5, SimilarFilters(), "m-3")
    missing, _ = store.missing("m-3", 100, None)
    assert sorted(p["item_id"] for p in missing) == sorted(set(m3) - set(expected) - {"item-12"})


def test_backfilled_sealed_shard_is_resealed(open_store: Callable[..., EdgeStore]) -> None:
    """A backfill writing a new version's vectors into a sealed shard: the shard is rebuilt with both indexed."""
    store = open_store(hot_max=50, merge_fanin=10)
    payloads, vectors = make_items(0, 60)
    for p in payloads:
        p["write_id"] = f"w-{p['item_id']}"
    store.upsert(payloads, vectors)
    assert store.wait_for_maintenance(WAIT_S) and "sealed" in shard_roles(store)
    before = {s["name"] for s in store.stats()["shards"] if s["role"] == "sealed"}
    store.open({"m-1": DIM, "m-2": 8})
    m2 = {p["item_id"]: unit_vector(n, 8) for n, p in enumerate(payloads)}
    for item_id, v in m2.items():
        assert store.set_vector(item_id, "m-2", v, f"w-{item_id}")
    assert store.wait_for_maintenance(WAIT_S)
    stats = store.stats()
    assert stats["reseals"] >= 1, stats
    sealed = [s for s in stats["shards"] if s["role"] == "sealed"]
    assert [s["points"] for s in sealed] == [60] and sealed[0]["name"] not in before, stats  # rebuilt
    assert store.coverage("m-2") == (60, 60)
    for item_id in ("item-3", "item-30"):
        hits = store.similar(item_id, 5, SimilarFilters(include_sold=True), "m-2")
        scores = {i: float(v @ m2[item_id]) for i, v in m2.items() if i != item_id}
        assert hits is not None and [h.item_id for h in hits] == sorted(scores, key=lambda i: (-scores[i], i))[:5]


VERSIONED_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from pathlib import Path
    from app.store.qdrant_edge import EdgeStore
    root, start, dim, round_ = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    store = EdgeStore(root, "items", hot_max=40, merge_fanin=2)
    store.open({"m-1": dim, "m-2": 8})

    def vec(n, d, gen):
        v = np.random.default_rng(n * 10 + gen).standard_normal(d).astype(np.float32)
        return v / np.linalg.norm(v)

    if round_ == 2:
        store.retire("m-1")
        print("RETIRED", flush=True)
    i = start
    while True:
        ids = list(range(i, i + 4))
        vectors = {"m-2": np.stack([vec(n, 8, 0) for n in ids])}
        if round_ < 2:
            vectors["m-1"] = np.stack([vec(n, dim, 0) for n in ids])
        store.upsert([{"item_id": f"k-{n}", "write_id": f"w-{n}"} for n in ids], vectors)
        print("U", *ids, flush=True)
        n = ids[0]
        print("s", n, flush=True)  # about to re-embed: may or may not be kept if killed now
        assert store.set_vector(f"k-{n}", "m-2", vec(n, 8, 1), f"w-{n}")
        print("S", n, flush=True)
        if round_ == 1 and i == start + 40:
            store.promote("m-2")
            print("PROMOTED", flush=True)
        i += 4
    """
)


def test_kill9_with_two_versions_loses_no_acknowledged_write(tmp_path: Path) -> None:
    """Upserts carrying two versions, set_vector, promote and retire, each acknowledged before a kill -9."""

    def vec(n: int, d: int, gen: int) -> np.ndarray:
        v = np.random.default_rng(n * 10 + gen).standard_normal(d).astype(np.float32)
        return v / np.linalg.norm(v)

    root = tmp_path / "qdrant"
    written: dict[int, int] = {}  # item number -> round that acknowledged its upsert
    reembedded: set[int] = set()
    in_doubt: set[int] = set()
    promoted = retired = False
    start = 0
    for round_ in range(3):
        proc = _python(VERSIONED_WRITER, str(root), str(start), str(DIM), str(round_))
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 2.0 + round_
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if round_ == 1 and not any(ln.startswith("PROMOTED") for ln in lines):
                deadline = max(deadline, time.monotonic() + 0.2)  # this round must reach its promote
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate()
        lines += rest.splitlines()
        for line in lines:
            kind, *nums = line.split()
            if kind == "U":
                written.update({int(n): round_ for n in nums})
            elif kind == "S":
                reembedded.add(int(nums[0]))
            elif kind == "s":
                in_doubt.add(int(nums[0]))
            promoted |= kind == "PROMOTED"
            retired |= kind == "RETIRED"
        in_doubt -= reembedded
        assert written, "the writer acknowledged nothing"
        start = max(written) + 400

        store = EdgeStore(root, "items", hot_max=40, merge_fanin=2)
        store.open({"m-2": 8} if retired else {"m-1": DIM, "m-2": 8})
        try:
            states = {v.model_version: v.state for v in store.versions()}
            assert states["m-2"] == ("serving" if promoted else "candidate"), states
            assert states["m-1"] == ("retired" if retired else "candidate" if promoted else "serving"), states
            count = store.count()
            assert len(written) <= count <= len(written) + 4 * (round_ + 1)  # + batches upserted, not yet acknowledged
            for n in sorted(written):
                assert store.get(f"k-{n}") == {"item_id": f"k-{n}", "write_id": f"w-{n}"}, f"k-{n} lost"
                gens = [1] if n in reembedded else [0, 1] if n in in_doubt else [0]
                top = store.similar_to_vector(vec(n, 8, gens[0]), 1, SimilarFilters(include_sold=True), "m-2")
                if len(gens) == 2 and top[0].item_id != f"k-{n}":
                    top = store.similar_to_vector(vec(n, 8, 1), 1, SimilarFilters(include_sold=True), "m-2")
                assert top[0].item_id == f"k-{n}" and top[0].score > 0.999, (n, gens, round_)
                if not retired:
                    top = store.similar_to_vector(vec(n, DIM, 0), 1, SimilarFilters(include_sold=True), "m-1")
                    assert top[0].item_id == f"k-{n}" and top[0].score > 0.999, n
            assert store.coverage("m-2") == (count, count)
            expected_names = {"m-2"} if retired else {"m-1", "m-2"}
            assert all(names == expected_names for names in shard_vectors(store)), shard_vectors(store)
        finally:
            store.close()
    assert promoted and retired and set(written.values()) == {0, 1, 2}  # every round acknowledged writes
