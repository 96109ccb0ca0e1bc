"""Listing-to-listing scores from photo-to-photo cosines, shared by both stores.

The score of a candidate listing is CHAMFER from the query's side: each usable photo of the query finds its
closest usable photo of the candidate, and the score is the mean of those cosines. `matched` names the pair
with the highest cosine among them (the strongest piece of evidence the page shows). Boilerplate photos
(payload `boilerplate`, marked by app/service/boilerplate.py) are not usable, unless every photo of a
listing is boilerplate: then all of them are (such a listing still has look-alikes, and can still be one).

The stores find candidates with the engine's MaxSim index: one query per query listing, whose vectors are
its usable photos, scores each listing sum_i max_j cos(q_i, d_j) over all of the listing's photos (an upper
bound of the exact score times the number of query photos: boilerplate photos left out can only lower it);
they over-fetch, then re-score the candidates exactly here from their stored photo vectors: the served
order is the exact aggregate over the candidates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.store.base import Hit, PhotoMatch


def candidates_for(k: int) -> int:
    """How many listings each photo query fetches for a top-k: room for boilerplate-inflated index scores."""
    return 2 * k + 10


def shortlist(index_scores: dict[Any, float], limit: int) -> list[Any]:
    """The `limit` candidates with the best index score (MaxSim of the query's photos): an upper bound of the
    exact score (boilerplate photos left out can only lower it), so only these are read and re-scored."""
    return sorted(index_scores, key=lambda c: -index_scores[c])[:limit]


def boilerplate_photos(payload: dict[str, Any]) -> list[int]:
    """The listing's photos marked boilerplate: payload `boilerplate` = {"write_id", "photos": [indexes]}, a
    mark that holds only for the write it names (a mark raced by a replace of the listing is ignored)."""
    mark = payload.get("boilerplate")
    if not isinstance(mark, dict) or mark.get("write_id") != payload.get("write_id"):
        return []
    photos = mark.get("photos")
    return sorted({i for i in photos if isinstance(i, int)}) if isinstance(photos, list) else []


def usable(rows: np.ndarray, payload: dict[str, Any]) -> list[int]:
    """The photo indexes that rank: all but the boilerplate ones (all of them when all are boilerplate)."""
    marked = set(boilerplate_photos(payload))
    kept = [i for i in range(len(rows)) if i not in marked]
    return kept or list(range(len(rows)))


def match(query: np.ndarray, query_idx: list[int], rows: np.ndarray, idx: list[int]) -> tuple[float, PhotoMatch]:
    """The listing score (the mean over the query photos of each one's best cosine among `idx`) and the pair
    of photos with the highest cosine."""
    sims = query[query_idx] @ rows[idx].T
    a, b = np.unravel_index(int(np.argmax(sims)), sims.shape)
    return float(sims.max(axis=1).mean()), PhotoMatch(query_idx[int(a)], idx[int(b)], float(sims[a, b]))


def rank(query: np.ndarray, query_idx: list[int], found: list[tuple[dict[str, Any], np.ndarray]], k: int) -> list[Hit]:
    """Top-k of the candidate listings (payload, photo rows [P, dim]) by the listing score, ties by item_id."""
    hits = []
    for payload, rows in found:
        score, pair = match(query, query_idx, rows, usable(rows, payload))
        hits.append(Hit(str(payload["item_id"]), score, payload, pair))
    return sorted(hits, key=lambda h: (-h.score, h.item_id))[:k]


def copies(
    vector: np.ndarray, min_cosine: float, found: list[tuple[dict[str, Any], np.ndarray]]
) -> dict[str, list[int]]:
    """{item_id: indexes of its photos at cosine >= min_cosine to `vector`} for the listings holding one."""
    out = {}
    for payload, rows in found:
        near = [int(j) for j in np.flatnonzero(rows @ np.asarray(vector, dtype=np.float32) >= min_cosine)]
        if near:
            out[str(payload["item_id"])] = near
    return out
