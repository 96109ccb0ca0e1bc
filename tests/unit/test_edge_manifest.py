"""Manifest of the embedded store: atomic round trip, counters, and removal of crash leftovers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.store.qdrant_edge.manifest import LOCK_FILE, MANIFEST, META_FILE, Manifest, ShardRecord, shard_name
from app.store.versions import StoredVersion


def test_round_trip_keeps_shards_and_counters(tmp_path: Path) -> None:
    m = Manifest(tmp_path)
    assert not m.exists()
    m.versions = [StoredVersion("siglip-v1", "serving", 768, "siglip-v1"), StoredVersion("v2", "candidate", 512, "v2")]
    hot_name, sealed_name = m.new_name(), m.new_name()
    assert (hot_name, sealed_name) == (shard_name(1), shard_name(2)) == ("shard-000001", "shard-000002")
    hot_rank = m.take_number()
    shards = [ShardRecord(sealed_name, "sealed", 1, 120), ShardRecord(hot_name, "hot", hot_rank)]
    m.write(shards)
    m.write(shards)

    data = json.loads((tmp_path / MANIFEST).read_text())
    assert data["format"] == 2 and data["generation"] == 2 and data["next_id"] == 4
    assert [row["name"] for row in data["shards"]] == [hot_name, sealed_name]  # rank descending
    assert not (tmp_path / (MANIFEST + ".tmp")).exists()

    again = Manifest(tmp_path)
    assert again.exists()
    assert sorted(again.load(), key=lambda r: r.rank) == sorted(shards, key=lambda r: r.rank)
    assert (again.versions, again.generation) == (m.versions, 2)
    assert again.vector_dims() == {"siglip-v1": 768, "v2": 512}
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
    (tmp_path / META_FILE).write_text("{}")

    removed = m.collect_garbage(keep={"shard-000001"})

    assert removed == ["manifest.json.tmp", "shard-000003", "tmp-shard-000004"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE, MANIFEST, META_FILE, "shard-000001"]
    assert (tmp_path / "shard-000001" / "wal" / "segment").read_bytes() == b"x"
    assert [r.name for r in m.load()] == ["shard-000001"]


def test_format_1_opens_as_one_serving_version_on_the_unnamed_vector(tmp_path: Path) -> None:
    old = {
        "format": 1,
        "dim": 16,
        "model_version": "m-old",
        "generation": 7,
        "next_id": 5,
        "shards": [{"name": "shard-000004", "role": "hot", "rank": 4, "points": 0}],
    }
    (tmp_path / MANIFEST).write_text(json.dumps(old))
    m = Manifest(tmp_path)

    assert m.load() == [ShardRecord("shard-000004", "hot", 4, 0)]
    assert m.versions == [StoredVersion("m-old", "serving", 16, "")]
    assert m.vector_dims() == {"": 16}
    assert (m.generation, m.new_name()) == (7, "shard-000005")

    m.write(m.load())  # the next write is format 2, with the same meaning
    data = json.loads((tmp_path / MANIFEST).read_text())
    assert data["format"] == 2 and "dim" not in data and "model_version" not in data
    assert data["versions"] == [{"model_version": "m-old", "state": "serving", "dim": 16, "vector": ""}]
    again = Manifest(tmp_path)
    again.load()
    assert again.versions == m.versions and again.generation == 8


def test_retired_versions_are_kept_but_have_no_vector(tmp_path: Path) -> None:
    m = Manifest(tmp_path)
    m.versions = [StoredVersion("a", "retired", 8, "a"), StoredVersion("b", "serving", 4, "b")]
    m.write([])
    again = Manifest(tmp_path)
    again.load()
    assert [v.public().state for v in again.versions] == ["retired", "serving"]
    assert again.vector_dims() == {"b": 4}


def test_unknown_version_state_is_refused(tmp_path: Path) -> None:
    row = {"model_version": "a", "state": "weird", "dim": 4, "vector": "a"}
    (tmp_path / MANIFEST).write_text(
        json.dumps({"format": 2, "versions": [row], "generation": 1, "next_id": 1, "shards": []})
    )
    with pytest.raises(ValueError, match="weird"):
        Manifest(tmp_path).load()
