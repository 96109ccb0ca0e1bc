"""Job planning of the embedded store: builds first, then size-tiered merges bounded by max_shard_points."""

from __future__ import annotations

from app.store.qdrant_edge.manifest import ShardRecord
from app.store.qdrant_edge.planning import plan_job, tier

HOT_MAX = 100


def plan(shards: list[ShardRecord], fanin: int = 2, max_points: int = 1600) -> tuple[str, list[str]] | None:
    planned = plan_job(shards, hot_max=HOT_MAX, merge_fanin=fanin, max_shard_points=max_points)
    return None if planned is None else (planned[0], [s.name for s in planned[1]])


def test_tiers_are_powers_of_the_fanin() -> None:
    assert [tier(p, HOT_MAX, 2) for p in (0, 100, 199, 200, 399, 400, 800)] == [0, 0, 0, 1, 1, 2, 3]
    assert [tier(p, HOT_MAX, 4) for p in (100, 399, 400, 1599, 1600)] == [0, 0, 1, 1, 2]


def test_nothing_to_do() -> None:
    assert plan([ShardRecord("h", "hot", 9)]) is None
    assert plan([ShardRecord("h", "hot", 9), ShardRecord("a", "sealed", 1, 100)]) is None
    # two sealed shards of different tiers do not merge
    two_tiers = [ShardRecord("h", "hot", 9), ShardRecord("a", "sealed", 1, 400), ShardRecord("b", "sealed", 2, 100)]
    assert plan(two_tiers) is None


def test_the_oldest_frozen_shard_is_built_first() -> None:
    shards = [
        ShardRecord("h", "hot", 9),
        ShardRecord("f2", "frozen", 7, 100),
        ShardRecord("f1", "frozen", 5, 100),
        ShardRecord("a", "sealed", 1, 100),
        ShardRecord("b", "sealed", 2, 100),
    ]
    assert plan(shards) == ("build", ["f1"])


def test_merges_take_the_oldest_shards_of_the_lowest_full_tier() -> None:
    shards = [
        ShardRecord("h", "hot", 9),
        ShardRecord("big1", "sealed", 1, 400),
        ShardRecord("big2", "sealed", 2, 450),
        ShardRecord("s3", "sealed", 6, 100),
        ShardRecord("s1", "sealed", 3, 120),
        ShardRecord("s2", "sealed", 4, 110),
    ]
    assert plan(shards) == ("merge", ["s1", "s2"])
    assert plan(shards, fanin=3) == ("merge", ["s1", "s2", "s3"])
    # tier 0 not full: the next tier merges
    assert plan([s for s in shards if s.name in ("h", "big1", "big2", "s1")]) == ("merge", ["big1", "big2"])


def test_merges_never_exceed_max_shard_points() -> None:
    shards = [ShardRecord("h", "hot", 9), ShardRecord("a", "sealed", 1, 800), ShardRecord("b", "sealed", 2, 900)]
    assert plan(shards, max_points=1600) is None
    assert plan(shards, max_points=1700) == ("merge", ["a", "b"])


def test_a_sealed_shard_rewritten_in_place_is_resealed_after_builds_and_merges() -> None:
    a, b, h = ShardRecord("a", "sealed", 1, 400), ShardRecord("b", "sealed", 2, 100), ShardRecord("h", "hot", 9)
    counts = {"a": 99, "b": 24}  # below a quarter of their points: nothing to do

    def planned(shards: list[ShardRecord]) -> tuple[str, list[str]] | None:
        got = plan_job(
            shards, hot_max=HOT_MAX, merge_fanin=2, max_shard_points=1600, rewritten=lambda s: counts[s.name]
        )
        return None if got is None else (got[0], [s.name for s in got[1]])

    assert planned([h, a, b]) is None
    counts.update(a=100, b=30)
    assert planned([h, a, b]) == ("reseal", ["b"])  # the most worn first
    assert planned([h, ShardRecord("f", "frozen", 5, 100), a, b]) == ("build", ["f"])
    counts["c"] = 0
    assert planned([h, a, b, ShardRecord("c", "sealed", 3, 100)]) == ("merge", ["b", "c"])
