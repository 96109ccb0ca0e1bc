"""ShardSet: reader snapshots hold reference counts; a retired shard is closed after its last reader."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from app.core.errors import StoreUnavailable
from app.store.qdrant_edge.builder import create_plain_shard
from app.store.qdrant_edge.manifest import Manifest
from app.store.qdrant_edge.shard import Shard
from app.store.qdrant_edge.shard_set import ShardSet
from app.store.qdrant_edge.state import StoreConfig, StoreState

DIM = 4
WAIT_S = 10.0


def make_shard(root: Path, name: str, role: str, rank: int) -> Shard:
    return Shard(name=name, path=root / name, edge=create_plain_shard(root / name, {"": DIM}), role=role, rank=rank)


@pytest.fixture
def shard_set(tmp_path: Path) -> ShardSet:
    config = StoreConfig(root=tmp_path, collection="items", max_shard_points=1000)
    state = StoreState(config=config, manifest=Manifest(tmp_path))
    shards = ShardSet(state)
    shards.install([make_shard(tmp_path, "old", "sealed", 1), make_shard(tmp_path, "hot", "hot", 5)])
    return shards


def test_snapshots_count_readers_and_come_hot_first(shard_set: ShardSet) -> None:
    with shard_set.reading() as outer:
        assert [s.name for s in outer] == ["hot", "old"]
        assert [s.readers for s in outer] == [1, 1]
        with shard_set.reading() as inner:
            assert [s.readers for s in inner] == [2, 2]
        assert [s.readers for s in outer] == [1, 1]
    assert [s.readers for s in outer] == [0, 0]
    with pytest.raises(RuntimeError), shard_set.reading():
        raise RuntimeError("a failed query")
    assert [s.readers for s in outer] == [0, 0]  # released on errors too


def test_swap_publishes_the_target_and_retires_sources_after_the_last_reader(
    shard_set: ShardSet, tmp_path: Path
) -> None:
    old = shard_set.state.shards[1]
    target = make_shard(tmp_path, "new", "sealed", 1)
    disposed = threading.Event()
    with shard_set.reading() as before:
        new_list = shard_set.swap([old], target)
        assert [s.name for s in new_list] == ["hot", "new"]
        shard_set.publish(new_list, retired=[old])
        assert old.retired
        with shard_set.reading() as after:  # new readers see the target only
            assert [s.name for s in after] == ["hot", "new"]
        assert not shard_set.wait_unread([old], timeout_s=0.05)  # the first snapshot still holds it

        def dispose() -> None:
            shard_set.dispose([old])
            disposed.set()

        t = threading.Thread(target=dispose)
        t.start()
        assert not disposed.wait(0.2)
        assert old.path.exists()
        assert old.edge.info().points_count == 0  # still open and queryable by this reader
        assert [s.name for s in before] == ["hot", "old"]
    t.join(WAIT_S)
    assert disposed.is_set()
    assert not old.path.exists()  # closed and deleted once the reader left
    assert shard_set.wait_unread([old], timeout_s=0)


def test_close_all_refuses_new_readers(shard_set: ShardSet) -> None:
    shards = list(shard_set.state.shards)
    shard_set.close_all(timeout_s=1.0)
    assert shard_set.state.shards == [] and not shard_set.state.open
    with pytest.raises(StoreUnavailable), shard_set.reading():
        pass
    assert all(s.path.exists() for s in shards)  # closed, not deleted


def test_close_all_waits_for_readers_at_most_timeout_s(shard_set: ShardSet, caplog: pytest.LogCaptureFixture) -> None:
    with shard_set.reading() as shards:  # a reader still querying when close comes
        shard_set.close_all(timeout_s=0.05)  # returns: the reader does not hold close up forever
        assert not shard_set.state.open and shard_set.state.shards == []
        assert [s.readers for s in shards] == [1, 1]
    assert [s.readers for s in shards] == [0, 0]
    assert "readers still active" in caplog.text
