"""Offline ranking metrics (nDCG@k, precision@k, recall@k) and paired bootstrap intervals.

Conventions, fixed here once:
* A query's relevance of a candidate is a non-negative number (in models.evaluate: how many viewing
  sessions of the query tapped that candidate). Gains are linear in it: DCG@k = sum_{r<=k} rel_r /
  log2(r + 1); the ideal DCG sorts all of the query's candidates by relevance.
* precision@k and recall@k count a candidate as relevant when rel > 0. recall@k divides by the number
  of relevant candidates of the query.
* Queries with no relevant candidate carry no signal for any of these and are left out by the caller.
* Intervals: percentile bootstrap over queries; the same resampled query sets are used for every
  system, so differences and ratios between systems get paired intervals.
"""

from __future__ import annotations

import numpy as np

METRICS: tuple[str, ...] = ("ndcg@5", "precision@1", "recall@10")


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def ndcg_at_k(ranked_rel: np.ndarray, all_rel: np.ndarray, k: int) -> float:
    """`ranked_rel`: relevance of the ranked candidates (best first); `all_rel`: of every candidate."""
    ideal = np.sort(np.asarray(all_rel, dtype=np.float64))[::-1][:k]
    idcg = float(ideal @ _discounts(len(ideal)))
    if idcg == 0:
        return 0.0
    top = np.asarray(ranked_rel, dtype=np.float64)[:k]
    return float(top @ _discounts(len(top))) / idcg


def precision_at_k(ranked_rel: np.ndarray, k: int) -> float:
    top = np.asarray(ranked_rel)[:k]
    return float(np.count_nonzero(top > 0)) / k


def recall_at_k(ranked_rel: np.ndarray, all_rel: np.ndarray, k: int) -> float:
    n_rel = int(np.count_nonzero(np.asarray(all_rel) > 0))
    if n_rel == 0:
        return 0.0
    return float(np.count_nonzero(np.asarray(ranked_rel)[:k] > 0)) / n_rel


def rank_by_score(scores: np.ndarray) -> np.ndarray:
    """Candidate indices by descending score; ties keep candidate order (stable), so results are reproducible."""
    return np.argsort(-np.asarray(scores), kind="stable")


def query_metrics(scores: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """[ndcg@5, precision@1, recall@10] of one query: `scores` and `rel` over the same candidates."""
    ranked = np.asarray(rel)[rank_by_score(scores)]
    return np.array([ndcg_at_k(ranked, rel, 5), precision_at_k(ranked, 1), recall_at_k(ranked, rel, 10)])


def bootstrap_indices(n_queries: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n_queries] resampled query indices, shared by all systems (paired bootstrap)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_queries, size=(n_boot, n_queries))


def bootstrap_ci(per_query: np.ndarray, idx: np.ndarray, level: float = 0.95) -> np.ndarray:
    """Percentile interval of the mean: per_query [Q, M] -> [M, 2]."""
    means = per_query[idx].mean(axis=1)  # [B, M]
    alpha = (1 - level) / 2
    return np.quantile(means, [alpha, 1 - alpha], axis=0).T


def bootstrap_relative_ci(
    per_query: np.ndarray, reference: np.ndarray, idx: np.ndarray, level: float = 0.95
) -> np.ndarray:
    """Percentile interval of mean(system) / mean(reference) - 1 over paired resamples -> [M, 2]."""
    num = per_query[idx].mean(axis=1)
    den = reference[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(den > 0, num / den - 1, np.nan)
    alpha = (1 - level) / 2
    return np.nanquantile(ratio, [alpha, 1 - alpha], axis=0).T
