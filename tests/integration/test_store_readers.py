"""EdgeStore with reader processes (app/store/qdrant_edge/readers.py): the searches of sealed shards run in
real `python -m app.store.qdrant_edge.reader` children on hardlinked views of the shards' segment files.

Sealed shards this small are searched exactly, so every answer must equal a brute-force ranking
(tests/integration/test_store_edge.py's Mirror), with readers on and off, after every kind of write
to a sealed item, and after a reader is killed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_edge import ScrollRequest

from app.store.base import SimilarFilters
from app.store.qdrant_edge import EdgeStore, page_cache
from app.store.qdrant_edge.builder import IndexOptions, vector_names
from app.store.qdrant_edge.reader import Reader
from app.store.qdrant_edge.readers import READERS_DIR
from tests.integration.test_store_edge import DIM, WAIT_S, Mirror, assert_matches, hold_builds, make_items

N = 160


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Callable[..., EdgeStore]]:
    stores: list[EdgeStore] = []

    def factory(**kw: Any) -> EdgeStore:
        kw = {"hot_max": 40, "merge_fanin": 10, "builder_nice": 0, **kw}
        store = EdgeStore(tmp_path / "qdrant", "items", **kw)
        store.open({"m-1": DIM})
        stores.append(store)
        return store

    yield factory
    for s in stores:
        s.close()


def filled(open_store: Callable[..., EdgeStore], workers: int = 2) -> tuple[EdgeStore, Mirror]:
    """A store of N items, most of them in sealed shards (with views), and what it should hold."""
    store = open_store(read_workers=workers)
    mirror = Mirror()
    for start in range(0, N, 40):
        payloads, vectors = make_items(start, 40)
        for p in payloads:
            p["write_id"] = f"w-{p['item_id']}"
        store.upsert(payloads, vectors)
        mirror.upsert(payloads, vectors)
        assert store.wait_for_maintenance(WAIT_S)
    roles = [s["role"] for s in store.stats()["shards"]]
    assert roles.count("sealed") >= 2, roles
    return store, mirror


def sealed_ids(store: EdgeStore) -> list[str]:
    """Items held by sealed shards (item ids)."""
    out = []
    for s in store._state.shards:
        if s.role == "sealed":
            records, _ = s.edge.scroll(ScrollRequest(limit=1000, with_payload=True))
            out += [r.payload["item_id"] for r in records]
    return out


def segment_hashes(root: Path) -> dict[str, str]:
    out = {}
    for shard in sorted(root.glob("shard-*")):
        for dirpath, _, names in os.walk(shard / "segments"):
            for name in names:
                path = Path(dirpath) / name
                out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


QUERIES = ["item-1", "item-45", "item-90", "item-130", "item-159"]


def test_results_equal_with_readers_on_and_off(open_store: Callable[..., EdgeStore]) -> None:
    store, mirror = filled(open_store)
    assert store._readers.pids() and len(store._readers.pids()) == 2
    assert_matches(store, mirror, QUERIES)
    assert store._readers.served > 0  # the readers answered the sealed shards
    with_readers = [[h.item_id for h in store.similar(q, 9, SimilarFilters()) or []] for q in QUERIES]
    store.close()
    off = open_store(read_workers=0)
    assert off._readers.pids() == []
    assert [[h.item_id for h in off.similar(q, 9, SimilarFilters()) or []] for q in QUERIES] == with_readers
    assert_matches(off, mirror, QUERIES)


def nearest_sealed(store: EdgeStore, mirror: Mirror, query: str) -> str:
    """The query's nearest neighbour (no filter) that a sealed shard holds."""
    sealed = set(sealed_ids(store))
    ranked = mirror.similar(query, len(mirror.payloads), SimilarFilters(include_sold=True))
    return next(i for i in ranked if i in sealed)


def test_read_your_writes_on_sealed_items(open_store: Callable[..., EdgeStore]) -> None:
    store, mirror = filled(open_store)
    query = "item-45"
    default = SimilarFilters()

    def check() -> None:
        before = store._readers.served
        assert_matches(store, mirror, [query, "item-90"])
        assert store._readers.served > before  # still offloaded (few touched points)

    target = nearest_sealed(store, mirror, query)  # deleted
    assert store.delete(target)
    mirror.delete(target)
    check()
    target = nearest_sealed(store, mirror, query)  # sold: out of the default filter
    store.patch(target, {"status": "sold"})
    mirror.patch(target, {"status": "sold"})
    check()
    assert target not in [h.item_id for h in store.similar(query, 9, default) or []]
    target = nearest_sealed(store, mirror, query)  # replaced: far away now
    payload = dict(mirror.payloads[target])
    far = -mirror.vectors[query][None, :]
    store.upsert([payload], far)
    mirror.upsert([payload], far)
    check()
    target = next(i for i in reversed(sealed_ids(store)) if mirror.payloads[i]["status"] != "sold")
    closest = mirror.vectors[query]  # set_vector: the farthest sealed item becomes the nearest
    assert store.set_vector(target, "m-1", closest, f"w-{target}")
    mirror.vectors[target] = closest
    check()
    assert [h.item_id for h in store.similar(query, 1, default) or []] == [target]


def test_a_killed_reader_is_replaced_and_no_answer_fails(open_store: Callable[..., EdgeStore]) -> None:
    store, mirror = filled(open_store, workers=1)
    assert_matches(store, mirror, QUERIES[:2])
    (pid,) = store._readers.pids()
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    assert_matches(store, mirror, QUERIES)  # the first search found it dead: answered in-process
    (fresh,) = store._readers.pids()
    assert fresh != pid
    os.kill(fresh, 0)  # alive
    before = store._readers.served
    assert_matches(store, mirror, QUERIES[:2])
    assert store._readers.served > before  # the new reader answers


def test_readers_never_modify_the_shared_segment_files(open_store: Callable[..., EdgeStore], tmp_path: Path) -> None:
    store, mirror = filled(open_store)
    root = tmp_path / "qdrant" / "items"
    before = segment_hashes(root)
    assert before
    views = sorted((root / READERS_DIR).iterdir())
    assert views
    for view in views:  # every reader's copy links the very files of the shard (same inodes)
        shard = root / view.name
        files = sorted(p.relative_to(shard) for p in (shard / "segments").rglob("*") if p.is_file())
        for slot in ("0", "1"):
            assert files and all(os.path.samefile(shard / f, view / slot / f) for f in files)
    assert_matches(store, mirror, QUERIES)  # the readers load every view and search it
    assert store._readers.served > 0
    for pid in store._readers.pids():
        os.kill(pid, signal.SIGKILL)
    assert_matches(store, mirror, QUERIES[:1])
    assert segment_hashes(root) == before


def test_close_leaves_no_reader_and_no_view(open_store: Callable[..., EdgeStore], tmp_path: Path) -> None:
    store, mirror = filled(open_store)
    pids = store._readers.pids()
    assert_matches(store, mirror, QUERIES[:1])
    root = tmp_path / "qdrant" / "items"
    assert (root / READERS_DIR).is_dir()
    store.close()
    assert not (root / READERS_DIR).exists()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    (root / READERS_DIR / "shard-000999").mkdir(parents=True)  # a crash leftover: removed on open
    again = open_store(read_workers=1)
    assert sorted(p.name for p in (root / READERS_DIR).iterdir()) == sorted(
        s.name for s in again._state.shards if s.role == "sealed"
    )
    assert_matches(again, mirror, QUERIES[:2])


def view_names(store: EdgeStore) -> list[str]:
    return sorted(p.name for p in (store.root / READERS_DIR).iterdir())


def sealed_names(store: EdgeStore) -> list[str]:
    return sorted(s["name"] for s in store.stats()["shards"] if s["role"] == "sealed")


def test_writes_during_a_build_and_merges_keep_reads_exact(open_store: Callable[..., EdgeStore]) -> None:
    """Writes replayed onto a built shard are not in its view (linked before the replay): still seen. Merged
    shards' views are dropped; the merge result gets one."""
    store = open_store(read_workers=2, merge_fanin=2, hot_max=100)  # 4 touched points: under 5% of a shard
    mirror = Mirror()
    held, release, phases = hold_builds(store)
    payloads, vectors = make_items(0, 110)
    store.upsert(payloads, vectors)
    mirror.upsert(payloads, vectors)
    for phase, gone, patched in (("copied", "item-1", "item-2"), ("built", "item-11", "item-12")):
        assert held.wait(WAIT_S), phases
        held.clear()
        assert phases[-1] == phase
        assert store.delete(gone)
        mirror.delete(gone)
        store.patch(patched, {"status": "sold"})
        mirror.patch(patched, {"status": "sold"})
        release.set()
        time.sleep(0.05)
        release.clear()
    release.set()
    assert store.wait_for_maintenance(WAIT_S)
    assert view_names(store) == sealed_names(store) != []
    before = store._readers.served
    assert_matches(store, mirror, ["item-3", "item-13", "item-30", "item-40"])
    assert store._readers.served > before
    for start in range(110, 410, 100):  # more builds, then merges retire sealed shards
        payloads, vectors = make_items(start, 100)
        store.upsert(payloads, vectors)
        mirror.upsert(payloads, vectors)
        assert store.wait_for_maintenance(WAIT_S)
    assert store.stats()["merges"] >= 1
    assert view_names(store) == sealed_names(store)
    assert_matches(store, mirror, ["item-3", "item-13", "item-160", "item-350"])


def released_resident_kb(under: Path) -> int:
    """Resident memory of this process's mappings of originals and payloads below `under` (from smaps)."""
    total, counting = 0, False
    prefix = str(under.resolve())
    with open("/proc/self/smaps", encoding="utf-8") as smaps:
        for line in smaps:
            fields = line.split()
            if fields and "-" in fields[0] and not fields[0].endswith(":"):
                path = fields[5] if len(fields) > 5 else ""
                counting = path.startswith(prefix) and any(part in path for part in page_cache.RELEASED)
            elif counting and fields[0] == "Rss:":
                total += int(fields[1])
    return total


def test_a_reader_unmaps_the_originals_it_read_and_answers_the_same(
    open_store: Callable[..., EdgeStore], tmp_path: Path
) -> None:
    """The originals a search re-scored with and the payloads it read leave the reader's memory (they stay
    in the page cache), and nothing a later search needs is lost."""
    store, _ = filled(open_store, workers=1)
    shard = next(s for s in store._state.shards if s.role == "sealed")
    src = tmp_path / "qdrant" / "items" / shard.name
    views = tmp_path / "views"
    slot = views / shard.name / "0"  # a view of our own: the store's reader holds its slot 0
    slot.mkdir(parents=True)
    shutil.copytree(src / "segments", slot / "segments", copy_function=os.link)
    shutil.copy(src / "edge_config.json", slot)
    (slot / "wal").mkdir()
    [using] = vector_names(src)
    _, vectors = make_items(0, 4, seed=7)
    search = (shard.name, str(views / shard.name), using, 10, None, None, [], vectors.tobytes(), DIM)
    reader = Reader(0, IndexOptions().search_params())

    first = reader.handle([], [search])
    assert first[0][0][0] and first[0][1]  # scored ids and their records
    assert page_cache.mapped([views]) and released_resident_kb(views) > 0
    for _ in range(page_cache.RELEASE_PARTS):  # each part in turn
        reader.tidy()
    assert released_resident_kb(views) == 0
    assert reader.handle([], [search]) == first  # re-read from the page cache: the same answer
    assert released_resident_kb(views) > 0
    reader.handle([shard.name], [])  # a dropped view: its mappings are read again before a release
    reader.tidy()
    assert reader.views == {} and page_cache.mapped([views]) == []


def test_the_serving_process_unmaps_sealed_shards_originals_and_payloads(
    open_store: Callable[..., EdgeStore], tmp_path: Path
) -> None:
    """Without readers the serving process re-scores and reads payloads itself; its release thread runs while
    the store is open, and a release leaves the answers unchanged."""
    store, mirror = filled(open_store, workers=0)
    assert any(t.name == "edge-release-items" for t in threading.enumerate())
    root = tmp_path / "qdrant" / "items"
    before = [[h.item_id for h in store.similar(q, 9, SimilarFilters()) or []] for q in QUERIES]
    assert released_resident_kb(root) > 0
    with store._shard_set.sealed_folders() as folders:
        assert folders and all(f.parent == root for f in folders)
        assert page_cache.release(page_cache.mapped(folders))
    assert released_resident_kb(root) == 0
    assert [[h.item_id for h in store.similar(q, 9, SimilarFilters()) or []] for q in QUERIES] == before
    assert_matches(store, mirror, QUERIES)
    store.close()
    assert not any(t.name == "edge-release-items" for t in threading.enumerate())


def test_a_one_photo_query_reads_further_when_the_best_by_index_score_is_not_final(
    open_store: Callable[..., EdgeStore],
) -> None:
    """A one-photo query reads the best k candidates by index score first (photos.Settle); a listing whose
    index score (its best photo) overstates its exact score (its other photo matches nothing) must not keep
    the next candidate out."""
    store = open_store(read_workers=1)
    axes = np.eye(DIM, dtype=np.float32)
    near = (axes[0] + 0.1 * axes[1]) / np.linalg.norm(axes[0] + 0.1 * axes[1])  # cos 0.995 to the query
    good = (0.9 * axes[0] + np.sqrt(1 - 0.81) * axes[2]).astype(np.float32)  # cos 0.9
    listings = {
        "query": axes[0][None, :],
        "two-faced": np.stack([near, axes[3]]),  # index score 0.995, exact (0.995 + 0.4975) / 2 = 0.746
        "plain": good[None, :],
    }
    store.upsert([{"item_id": i, "write_id": f"w-{i}"} for i in listings], list(listings.values()))
    fillers, vectors = make_items(100, 60, seed=3)  # enough to seal the shard above
    vectors[:, :4] = 0  # far from all three
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store.upsert(fillers, vectors)
    assert store.wait_for_maintenance(WAIT_S)
    assert {"query", "two-faced", "plain"} <= set(sealed_ids(store))  # searched, and read, by the reader
    for k in (1, 2):
        hits = store.similar("query", k, SimilarFilters(include_sold=True)) or []
        assert [h.item_id for h in hits] == ["plain", "two-faced"][:k]
        assert hits[0].score == pytest.approx(0.9, abs=1e-5)
    # a search by photo scores the best photo only: there the index score is exact and the first read settles
    assert [h.item_id for h in store.similar_to_vector(axes[0], 1, SimilarFilters(include_sold=True))] == ["query"]
