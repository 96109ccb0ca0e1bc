"""A data folder written by an earlier version of the embedded store opens unchanged with this one.

The earlier code is the app/ of commit b357bcd, extracted with `git archive` and run in a subprocess
(PYTHONPATH = the extracted tree): it writes enough items to seal and merge shards with a small
hot_max, then deletes, patches and replaces some, records every payload and a set of similar()
answers, and closes. This code then opens the folder and must give the same answers.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.core.errors import SinglePhotoVersion
from app.store.base import SimilarFilters
from app.store.qdrant_edge import EdgeStore
from tests.live import run_process

REPO = Path(__file__).resolve().parents[2]
OLD_COMMIT = "b357bcd"
DIM = 16
WAIT_S = 120.0

FILTERS = {
    "none": SimilarFilters(),
    "c1": SimilarFilters(category="c1"),
    "price": SimilarFilters(min_price=5.0, max_price=30.0),
    "sold_seller": SimilarFilters(include_sold=True, exclude_same_seller=True),
}

OLD_WRITER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from pathlib import Path
    import app.store.qdrant_edge as pkg
    from app.store.base import SimilarFilters
    from app.store.qdrant_edge import EdgeStore

    root, out, dim = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    filters = {
        "none": SimilarFilters(),
        "c1": SimilarFilters(category="c1"),
        "price": SimilarFilters(min_price=5.0, max_price=30.0),
        "sold_seller": SimilarFilters(include_sold=True, exclude_same_seller=True),
    }
    rng = np.random.default_rng(3)

    def items(start, n):
        v = rng.standard_normal((n, dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        p = [{"item_id": f"item-{i}", "category": f"c{i % 3}", "price": float(i % 40), "seller_id": f"s{i % 4}",
              "status": "sold" if i % 7 == 0 else "on_sale"} for i in range(start, start + n)]
        return p, v

    store = EdgeStore(root, "items", hot_max=30, merge_fanin=2, builder_nice=0)
    store.ensure_collection(dim, "m-old")
    assert store.wait_for_maintenance(120)  # a spare is ready: the hot shard freezes at hot_max
    for start in range(0, 100, 10):
        store.upsert(*items(start, 10))
        if start % 30 == 20:
            assert store.wait_for_maintenance(120)
    assert store.wait_for_maintenance(120)
    for i in (1, 2, 33, 95):  # deletes in sealed shards and in the hot shard
        assert store.delete(f"item-{i}")
    for i in (4, 40, 97):
        assert store.patch(f"item-{i}", {"status": "sold", "price": None, "title": "patched"}) is not None
    p, v = items(5, 2)  # item-5, item-6 move from a sealed shard to the hot shard, with new vectors
    store.upsert(p, v)
    p, v = items(100, 5)
    store.upsert(p, v)
    ids = [f"item-{i}" for i in range(105)]
    payloads = {i: store.get(i) for i in ids}
    queries = ["item-0", "item-4", "item-5", "item-40", "item-97", "item-104"]
    similar = {
        f"{q}/{name}": [[h.item_id, h.score, h.payload] for h in store.similar(q, 7, f)]
        for q in queries for name, f in filters.items()
    }
    stats = store.stats()
    store.close()
    out.write_text(json.dumps({"module": pkg.__file__, "payloads": payloads, "similar": similar,
                               "count": sum(v is not None for v in payloads.values()),
                               "roles": [s["role"] for s in stats["shards"]]}))
    """
)


def answers(store: EdgeStore, old: dict[str, Any]) -> list[Any]:
    """similar() for the old run's queries (item-0 is deleted by this test)."""
    queries = [key.split("/") for key in old["similar"] if not key.startswith("item-0/")]
    return [store.similar(q, 7, FILTERS[name]) for q, name in queries]


@pytest.fixture
def old_app(tmp_path: Path) -> Path:
    """The app/ package of the earlier commit, extracted from git."""
    tree = tmp_path / "old"
    tree.mkdir()
    archive = run_process(["git", "-C", str(REPO), "archive", OLD_COMMIT, "app"], capture_output=True, check=True)
    run_process(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    assert (tree / "app" / "store" / "qdrant_edge" / "state.py").exists()  # the five-class version
    return tree


def test_folder_written_by_the_earlier_store_opens_unchanged(tmp_path: Path, old_app: Path) -> None:
    root, out = tmp_path / "qdrant", tmp_path / "old.json"
    env = {**os.environ, "PYTHONPATH": str(old_app)}
    done = run_process(
        [sys.executable, "-c", OLD_WRITER, str(root), str(out), str(DIM)],
        cwd=old_app,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    old = json.loads(out.read_text())
    assert old["module"].startswith(str(old_app))  # the earlier code wrote it, not this checkout
    assert "sealed" in old["roles"] and old["roles"][0] == "hot", old["roles"]
    assert old["payloads"]["item-1"] is None and old["payloads"]["item-4"]["title"] == "patched"

    store = EdgeStore(root, "items", hot_max=30, merge_fanin=2, builder_nice=0)
    store.open({"m-old": DIM})
    try:
        assert [s["role"] for s in store.stats()["shards"]] == old["roles"]
        assert store.count() == old["count"]
        for item_id, payload in old["payloads"].items():
            assert store.get(item_id) == payload, item_id

        def check_similar() -> None:
            for key, expected in old["similar"].items():
                query, name = key.split("/")
                hits = store.similar(query, 7, FILTERS[name])
                assert hits is not None, key
                assert [h.item_id for h in hits] == [e[0] for e in expected], key
                assert [h.score for h in hits] == pytest.approx([e[1] for e in expected], abs=1e-5), key
                assert [h.payload for h in hits] == [e[2] for e in expected], key

        check_similar()
        # The new code keeps maintaining the folder it did not write: writes, freezes, builds, merges.
        assert store.wait_for_maintenance(WAIT_S)
        check_similar()
        assert store.delete("item-0")
        assert store.get("item-0") is None
        after_delete = answers(store, old)
    finally:
        store.close()
    manifest = json.loads((root / "items" / "manifest.json").read_text())
    assert manifest["format"] == 1 and manifest["dim"] == DIM and manifest["model_version"] == "m-old"  # not rewritten

    # A second model version joins the old folder: every shard gets its named vector, the old one
    # keeps answering as before, the new one serves the items it has, and maintenance keeps both.
    store = EdgeStore(root, "items", hot_max=30, merge_fanin=2, builder_nice=0)
    versions = store.open({"m-old": DIM, "m-new": 8})
    try:
        assert [(v.model_version, v.state) for v in versions] == [("m-old", "serving"), ("m-new", "candidate")]
        assert answers(store, old) == after_delete
        assert store.coverage("m-new") == (0, old["count"] - 1)
        rng = np.random.default_rng(4)
        fresh = rng.standard_normal((1, 8)).astype(np.float32)
        store.upsert(
            [{"item_id": "late", "write_id": "w"}], {"m-old": np.eye(DIM, dtype=np.float32)[:1], "m-new": fresh}
        )
        assert store.similar("late", 3, FILTERS["none"], "m-new") == []  # the only item with m-new
        with pytest.raises(SinglePhotoVersion):  # the old version keeps one vector per listing: one photo
            store.upsert([{"item_id": "two", "write_id": "w"}], {"m-old": [np.eye(DIM)[:2]], "m-new": [fresh]})
        assert store.get("two") is None
        with_late = answers(store, old)
        assert store.wait_for_maintenance(WAIT_S)
        assert answers(store, old) == with_late
        assert store.coverage("m-new") == (1, old["count"])
        # items written before write ids existed are backfilled with write_id None
        kept = next(i for i, p in old["payloads"].items() if p is not None and i != "item-0")
        assert store.set_vector(kept, "m-new", fresh[0], "some write") is False
        assert store.set_vector(kept, "m-new", fresh[0], None)
        assert store.coverage("m-new") == (2, old["count"]) and store.get(kept) == old["payloads"][kept]
    finally:
        store.close()
    # rewritten in the versioned format: the old version keeps the unnamed vector
    manifest = json.loads((root / "items" / "manifest.json").read_text())
    assert manifest["format"] == 2
    assert manifest["versions"] == [
        {"model_version": "m-old", "state": "serving", "dim": DIM, "vector": ""},
        {"model_version": "m-new", "state": "candidate", "dim": 8, "vector": "m-new~photos"},
    ]
