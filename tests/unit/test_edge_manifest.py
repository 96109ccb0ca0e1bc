"""Manifest of the embedded store: atomic round trip, counters, and removal of crash leftovers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.store.qdrant_edge.manifest import LOCK_FILE, MANIFEST, Manifest, ShardRecord, shard_name


def test_round_trip_keeps_shards_and_counters(tmp_path: Path) -> None:
    m = Manifest(tmp_path)
    assert not m.exists()
    m.dim, m.model_version = 768, "siglip-v1"
    hot_name, sealed_name = m.new_name(), m.new_name()
    assert (hot_name, sealed_name) == (shard_name(1), shard_name(2)) == ("shard-000001", "shard-000002")
    hot_rank = m.take_number()
    shards = [ShardRecord(sealed_name, "sealed", 1, 120), ShardRecord(hot_name, "hot", hot_rank)]
    m.write(shards)
    m.write(shards)

    data = json.loads((tmp_path / MANIFEST).read_text())
    assert data["format"] == 1 and data["generation"] == 2 and data["next_id"] == 4
    assert [row["name"] for row in data["shards"]] == [hot_name, sealed_name]  # rank descending
    assert not (tmp_path / (MANIFEST + ".tmp")).exists()

    again = Manifest(tmp_path)
    assert again.exists()
    assert sorted(again.load(), key=lambda r: r.rank) == sorted(shards, key=lambda r: r.rank)
    assert (again.dim, again.model_version, again.generation) == (768, "siglip-v1", 2)
    assert again.new_name() == "shard-000004"  # numbers are never reused after a reopen
    again.write(again.load())
    assert json.loads((tmp_path / MANIFEST).read_text())["generation"] == 3


def test_unsupported_format_is_refused(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text(json.dumps({"format": 99, "shards": []}))
    with pytest.raises(RuntimeError, match="unsupported format"):
        Manifest(tmp_path).load()


def test_garbage_collection_keeps_only_what_the_manifest_names(tmp_path: Path) -> None:
    m = Manifest(tmp_path)
    m.write([ShardRecord("shard-000001", "hot", 2)])
    (tmp_path / LOCK_FILE).touch()
    for name in ("shard-000001", "shard-000003", "tmp-shard-000004"):
        (tmp_path / name / "wal").mkdir(parents=True)
        (tmp_path / name / "wal" / "segment").write_bytes(b"x")
    (tmp_path / (MANIFEST + ".tmp")).write_text("{")

    removed = m.collect_garbage(keep={"shard-000001"})

    assert removed == ["manifest.json.tmp", "shard-000003", "tmp-shard-000004"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE, MANIFEST, "shard-000001"]
    assert (tmp_path / "shard-000001" / "wal" / "segment").read_bytes() == b"x"
    assert [r.name for r in m.load()] == ["shard-000001"]
