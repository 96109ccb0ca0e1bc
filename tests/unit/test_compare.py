"""Comparison of two versions' look-alike lists: overlap@k, rank correlation, quantiles, seeded sampling."""

from __future__ import annotations

import asyncio

import pytest

from app.service.compare import compare, compare_lists, render, sample_ids


def test_identical_lists_overlap_fully_and_correlate_perfectly() -> None:
    c = compare_lists("q", ["a", "b", "c", "d"], ["a", "b", "c", "d"], k=4)
    assert (c.overlap, c.spearman, c.kendall) == (1.0, 1.0, 1.0)


def test_reversed_and_disjoint_lists() -> None:
    reversed_ = compare_lists("q", ["a", "b", "c", "d"], ["d", "c", "b", "a"], k=4)
    assert reversed_.overlap == 1.0
    assert reversed_.spearman == pytest.approx(-1.0) and reversed_.kendall == pytest.approx(-1.0)
    disjoint = compare_lists("q", ["a", "b"], ["c", "d"], k=2)
    assert disjoint.overlap == 0.0
    # on the union a, b, c, d: ranks (0, 1, 2, 2) vs (2, 2, 0, 1): opposite orders
    assert disjoint.spearman is not None and disjoint.spearman < 0


def test_half_overlap() -> None:
    c = compare_lists("q", ["a", "b", "c", "d"], ["a", "x", "b", "y"], k=4)
    assert c.overlap == 0.5
    assert c.spearman is not None and 0 < c.spearman < 1


def test_sampling_is_seeded_and_bounded() -> None:
    ids = [f"i{n}" for n in range(100)]
    assert sample_ids(ids, 10, seed=3) == sample_ids(list(reversed(ids)), 10, seed=3)
    assert sample_ids(ids, 10, seed=3) != sample_ids(ids, 10, seed=4)
    assert len(set(sample_ids(ids, 10, seed=3))) == 10
    assert sorted(sample_ids(ids, 500, seed=0)) == sorted(ids)


def test_report_over_a_sample_counts_unranked_items_and_finds_the_most_changed() -> None:
    lists = {
        ("same", "v1"): [("a", 0.9), ("b", 0.8)],
        ("same", "v2"): [("a", 0.7), ("b", 0.6)],
        ("moved", "v1"): [("a", 0.9), ("b", 0.8)],
        ("moved", "v2"): [("c", 0.5), ("d", 0.4)],
        ("new", "v1"): [("a", 0.9), ("b", 0.8)],
    }

    async def rank(item_id: str, version: str, k: int) -> list[tuple[str, float]] | None:
        return lists.get((item_id, version))

    report = asyncio.run(compare(rank, ["same", "moved", "new"], "v1", "v2", k=2))
    assert (report.sampled, report.compared, report.not_ranked) == (3, 2, 1)
    assert report.overlap_mean == 0.5
    assert [c.item_id for c in report.changed_most] == ["moved", "same"]
    assert report.scores_v1["p50"] == pytest.approx(0.85)
    assert report.scores_v2["p50"] == pytest.approx(0.55)
    table = render(report)
    assert "v1 vs v2: 2 of 3 sampled items compared at k=2 (1 not ranked by both)" in table
    assert "moved" in table and report.as_dict()["changed_most"][0]["item_id"] == "moved"
