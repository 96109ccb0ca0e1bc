"""Listing scores from photo cosines, on hand-made unit vectors whose cosines are known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models import listing_aggregates as agg

# Three listings, photos grouped by listing. Listing 0: a, chart; listing 1: b, chart; listing 2: a' (close to a).
_A, _B, _CHART = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])
_A2 = np.array([0.8, 0.6, 0.0])  # cos(a, a') = 0.8, cos(b, a') = 0.6
EMB = np.stack([_A, _CHART, _B, _CHART, _A2])
OWNER = np.array([0, 0, 1, 1, 2])
ALL = np.ones(5, bool)
NO_CHARTS = np.array([True, False, True, False, True])


def _scores(name: str, usable: np.ndarray = ALL) -> np.ndarray:
    return agg.AGGREGATES[name](agg.listing_photos(EMB, OWNER, usable))


def test_photos_are_padded_per_listing_and_a_listing_of_boilerplate_keeps_its_photos() -> None:
    p = agg.listing_photos(EMB, OWNER, np.array([True, False, False, False, True]))
    assert p.vecs.shape == (3, 2, 3) and np.array_equal(p.vecs[2, 1], np.zeros(3))
    assert p.use.tolist() == [[True, False], [True, True], [True, False]]  # listing 1: only left-out photos
    assert np.array_equal(p.covers, EMB[[0, 2, 4]])


def test_best_pair_is_the_max_over_usable_photo_pairs() -> None:
    everything = _scores("best_pair")
    assert everything[0, 1] == pytest.approx(1.0)  # the shared chart makes listings 0 and 1 identical
    assert everything[0, 2] == pytest.approx(0.8) and everything[1, 2] == pytest.approx(0.6)
    no_charts = _scores("best_pair", NO_CHARTS)
    assert no_charts[0, 1] == pytest.approx(0.0) and no_charts[0, 2] == pytest.approx(0.8)


def test_chamfer_averages_each_query_photos_best_match() -> None:
    one_way = _scores("chamfer")
    # Listing 0's photos: a finds a' (0.8), the chart finds nothing better than 0; listing 2's a' finds a.
    assert one_way[0, 2] == pytest.approx(0.4) and one_way[2, 0] == pytest.approx(0.8)
    assert one_way[0, 1] == pytest.approx(0.5)  # a matches nothing in listing 1, the chart matches its copy
    assert _scores("chamfer_symmetric")[0, 2] == pytest.approx(0.6)
    assert _scores("chamfer", NO_CHARTS)[0, 2] == pytest.approx(0.8)  # the chart no longer dilutes a


def test_top2_mean_mean_vector_and_cover_weights() -> None:
    top2 = _scores("top2_mean")
    assert top2[0, 1] == pytest.approx(0.5) and top2[0, 2] == pytest.approx(0.4)  # (1 + 0) / 2, (0.8 + 0) / 2
    assert top2[2, 2] == pytest.approx(1.0)  # one photo each: the one pair, not half of it
    # Listing 0's mean vector is (a + chart) / sqrt(2).
    assert _scores("mean_vector")[0, 2] == pytest.approx(0.8 / math.sqrt(2))
    assert _scores("mean_vector", NO_CHARTS)[0, 2] == pytest.approx(0.8)
    # Covers a and a' (0.8) half, chamfer (0.4) half; covers a and b (0) 30%, best pair (1) 70%.
    assert _scores("cover50+chamfer")[0, 2] == pytest.approx(0.6)
    assert _scores("cover30+best_pair")[0, 1] == pytest.approx(0.7)


def test_the_default_is_the_served_chamfer_and_cover30_mean_vector_mixes_covers_and_means() -> None:
    assert agg.DEFAULT_AGGREGATE == "chamfer_symmetric"  # what app/store/photos.py serves for GET /similar
    scores = _scores("cover30+mean_vector")
    # Covers a and a': 0.8; listing 0's mean (a + chart) / sqrt(2) against a': 0.8 / sqrt(2).
    assert scores[0, 2] == pytest.approx(0.3 * 0.8 + 0.7 * 0.8 / math.sqrt(2))
    # Covers a and b: 0; the means (a + chart) / sqrt(2) and (b + chart) / sqrt(2): 1/2, all from the chart.
    assert scores[0, 1] == pytest.approx(0.7 * 0.5)
    no_charts = _scores("cover30+mean_vector", NO_CHARTS)
    assert no_charts[0, 1] == pytest.approx(0.0) and no_charts[0, 2] == pytest.approx(0.8)
