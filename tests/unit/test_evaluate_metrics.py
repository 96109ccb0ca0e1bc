"""models.metrics against hand-computed values, and the colour-histogram and PCA baselines of models.evaluate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models import evaluate, evaluate_listings, metrics

# Toy ranking: 12 candidates, scores fall with the index, so the ranking is the candidate order.
# Relevance (tap counts) 2 at rank 2, 1 at rank 4, 1 at rank 11.
TOY_SCORES = np.arange(12, 0, -1, dtype=np.float64)
TOY_REL = np.array([0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0], dtype=np.float64)


def test_ndcg_at_5_by_hand() -> None:
    # DCG@5 = 2/log2(3) + 1/log2(5); ideal order 2, 1, 1 -> IDCG@5 = 2/log2(2) + 1/log2(3) + 1/log2(4).
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 2 / 1 + 1 / math.log2(3) + 1 / 2
    assert dcg / idcg == pytest.approx(0.540586, abs=1e-6)
    got = metrics.ndcg_at_k(TOY_REL[metrics.rank_by_score(TOY_SCORES)], TOY_REL, 5)
    assert got == pytest.approx(dcg / idcg, abs=1e-12)


def test_precision_at_1_and_recall_at_10_by_hand() -> None:
    ranked = TOY_REL[metrics.rank_by_score(TOY_SCORES)]
    assert metrics.precision_at_k(ranked, 1) == 0.0  # the top candidate was never tapped
    assert metrics.recall_at_k(ranked, TOY_REL, 10) == pytest.approx(2 / 3)  # the third tap is at rank 11
    # Reversed scores put rank 11's candidate second and the relevant "2" at rank 11.
    flipped = metrics.query_metrics(-TOY_SCORES, TOY_REL)
    # Ranked relevances: 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 2, 0 -> DCG@5 = 1/log2(3).
    assert flipped[0] == pytest.approx((1 / math.log2(3)) / (2 + 1 / math.log2(3) + 0.5), abs=1e-12)
    assert flipped[1] == 0.0
    assert flipped[2] == pytest.approx(2 / 3)


def test_perfect_and_one_hit_rankings() -> None:
    perfect = metrics.query_metrics(TOY_REL, TOY_REL)  # scored by relevance itself
    assert perfect.tolist() == pytest.approx([1.0, 1.0, 1.0])
    one = metrics.query_metrics(np.array([3.0, 2.0, 1.0]), np.array([1.0, 0.0, 0.0]))
    assert one.tolist() == pytest.approx([1.0, 1.0, 1.0])
    last = metrics.query_metrics(np.array([3.0, 2.0, 1.0]), np.array([0.0, 0.0, 1.0]))
    assert last.tolist() == pytest.approx([0.5, 0.0, 1.0])  # 1/log2(4) / 1


def test_ties_rank_in_candidate_order() -> None:
    assert metrics.rank_by_score(np.array([1.0, 2.0, 2.0, 1.0])).tolist() == [1, 2, 0, 3]


def test_bootstrap_intervals() -> None:
    rng = np.random.default_rng(0)
    per_query = rng.random((200, 3))
    idx = metrics.bootstrap_indices(200, 500, seed=1)
    ci = metrics.bootstrap_ci(per_query, idx)
    mean = per_query.mean(axis=0)
    assert np.all(ci[:, 0] < mean) and np.all(mean < ci[:, 1])
    assert np.all(ci[:, 1] - ci[:, 0] < 0.2)
    same = metrics.bootstrap_relative_ci(per_query, per_query, idx)
    assert np.allclose(same, 0.0)  # paired resamples: a system vs itself has no spread
    constant = metrics.bootstrap_ci(np.full((50, 3), 0.25), metrics.bootstrap_indices(50, 100, seed=0))
    assert np.allclose(constant, 0.25)


def test_colour_histogram_is_unit_norm_and_colour_sensitive() -> None:
    red = np.zeros((1, 8, 8, 3), np.uint8)
    red[..., 0] = 250
    blue = np.zeros((1, 8, 8, 3), np.uint8)
    blue[..., 2] = 250
    h = evaluate.colour_histogram(np.concatenate([red, red, blue]))
    assert np.allclose(np.linalg.norm(h, axis=1), 1.0)
    assert h[0] @ h[1] == pytest.approx(1.0) and h[0] @ h[2] == pytest.approx(0.0)


def test_pca_projection_keeps_requested_dims() -> None:
    x = np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32)
    mean, comps = evaluate.fit_pca(x, 8)
    y = evaluate.pca_project(x, mean, comps)
    assert y.shape == (40, 8) and np.allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
    _, all_comps = evaluate.fit_pca(x, 128)  # more than the dimension: a centred rotation
    assert all_comps.shape == (16, 16)


# Listing-level aggregation on hand-made unit vectors: three listings, photos grouped by listing.
# Listing 0: photos a, chart; listing 1: photo b, chart; listing 2: photo a' (close to a).
_A, _B, _CHART = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])
_A2 = np.array([0.8, 0.6, 0.0])
TOY_EMB = np.stack([_A, _CHART, _B, _CHART, _A2])
TOY_OWNER = np.array([0, 0, 1, 1, 2])


def test_boilerplate_needs_near_copies_on_enough_other_listings() -> None:
    # The chart is on 2 listings: each copy has a near-copy on 1 other listing.
    marked = evaluate_listings.boilerplate_photos(TOY_EMB, TOY_OWNER, min_cosine=0.99, min_listings=1)
    assert marked.tolist() == [False, True, False, True, False]
    assert not evaluate_listings.boilerplate_photos(TOY_EMB, TOY_OWNER, 0.99, min_listings=2).any()
    # A lower cosine takes a and a' for copies too (on 1 other listing each).
    assert evaluate_listings.boilerplate_photos(TOY_EMB, TOY_OWNER, 0.75, 1).tolist() == [True, True, False, True, True]
    # Two copies inside one listing are not two listings.
    same_listing = evaluate_listings.boilerplate_photos(TOY_EMB[:2], np.array([0, 0]), 0.0, 1)
    assert not same_listing.any()


def test_rank_metrics_and_top5_shares_use_products_and_sellers() -> None:
    scores = np.array([[0, 3, 2, 1], [3, 0, 1, 2], [2, 1, 0, 3], [1, 2, 3, 0]], dtype=np.float64)
    product = np.array([0, 1, 0, 2])  # listings 1 and 3 have no other listing of their product: no query
    per_query = evaluate_listings.rank_metrics(scores, product)
    # Both queries rank their one relevant listing second: nDCG@5 1/log2(3), P@1 0, R@10 1.
    assert np.allclose(per_query, [[1 / math.log2(3), 0.0, 1.0]] * 2)
    seller = np.array([7, 7, 7, 9])
    shares = evaluate_listings.top5_shares(scores, product, seller, np.array([0, 2]))
    # Each query's 3 look-alikes: its product's other listing, listing 1 (seller 7, another product), listing 3.
    assert shares == {"same_product": pytest.approx(1 / 3), "same_seller_other_product": pytest.approx(1 / 3)}
