"""Listing-to-listing scores from photo-to-photo cosines, shared by both stores.

GET /similar scores a candidate listing by SYMMETRIC CHAMFER: each usable photo of the query finds its
closest usable photo of the candidate (forward), each usable photo of the candidate finds its closest usable
photo of the query (reverse), and the score is the mean of the two directions' mean cosines: the same for
A against B as for B against A. A search by photo (POST /similar) scores each listing by the photo's best
match among its photos (the forward direction alone: a listing is found by any one photo of it). `matched`
names the pair with the highest cosine (the strongest piece of evidence the page shows). Boilerplate photos
(payload `boilerplate`, marked by app/service/boilerplate.py) are not usable, unless every photo of a
listing is boilerplate: then all of them are (such a listing still has look-alikes, and can still be one).

The stores find candidates with the engine's MaxSim index: one query per query listing, whose vectors are
its usable photos, scores each listing sum_i max_j cos(q_i, d_j) over all of the listing's photos (the
forward direction times the number of query photos, boilerplate photos included); they over-fetch, then
re-score the candidates exactly here from their stored photo vectors: the served order is the exact score
over the candidates.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from app.store.base import Hit, PhotoMatch


def candidates_for(k: int) -> int:
    """How many listings each photo query fetches for a top-k: room for boilerplate-inflated index scores."""
    return 2 * k + 10


def shortlist(index_scores: dict[Any, float], limit: int) -> list[Any]:
    """The `limit` candidates with the best index score (MaxSim of the query's photos, the forward direction):
    only these are read and re-scored."""
    return sorted(index_scores, key=lambda c: -index_scores[c])[:limit]


class Settle(NamedTuple):
    """A one-photo query's index score (max_j cos(q, d_j) over all of a listing's photos) bounds the exact score
    from above (boilerplate photos left out and the reverse direction can only lower it). So once the best `k`
    candidates by index score are read, they are the final top k when the k-th exact score beats the next
    candidate's index score: the other candidates' photo vectors need not be read (in the reader processes,
    converting them was half of a search's time at 1M listings)."""

    k: int
    both_ways: bool

    def final(self, query: np.ndarray, found: list[tuple[dict[str, Any], np.ndarray]], bound: float) -> bool:
        hits = rank(query, list(range(len(query))), found, self.k, self.both_ways)
        return len(hits) == self.k and hits[-1].score > bound


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


def _rows(rows: np.ndarray, idx: list[int]) -> np.ndarray:
    return rows if len(idx) == len(rows) else rows[idx]  # usable photos; no copy when all are


def rank(
    query: np.ndarray,
    query_idx: list[int],
    found: list[tuple[dict[str, Any], np.ndarray]],
    k: int,
    both_ways: bool,
) -> list[Hit]:
    """Top-k of the candidate listings (payload, photo rows [P, dim]) by score, ties by item_id: the mean over
    the query photos `query_idx` of each one's best cosine among the listing's usable photos, averaged with
    the reverse (each usable photo of the listing against the query photos) when `both_ways`; `matched` is the
    pair of highest cosine. Vectorised over the candidates: a loop of numpy calls per candidate cost ~18 us
    each, half a millisecond of the serving thread per request."""
    if not found:
        return []
    kept = [usable(rows, payload) for payload, rows in found]
    counts = np.array([len(idx) for idx in kept])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    # [all usable candidate photos, query photos]: small products stacked, not the candidates' rows (a fresh
    # array of them is large enough to be mapped anew, and page-faulted, at every request)
    against = query[query_idx].T
    sims = np.concatenate([_rows(rows, idx) @ against for (_, rows), idx in zip(found, kept, strict=True)])
    forward = np.maximum.reduceat(sims, starts, axis=0).mean(axis=1)  # [candidates]
    reverse = np.add.reduceat(sims.max(axis=1), starts) / counts if both_ways else forward
    scores = ((forward + reverse) / 2).tolist()
    ids = [str(payload["item_id"]) for payload, _ in found]
    hits = []
    for c in sorted(range(len(found)), key=lambda c: (-scores[c], ids[c]))[:k]:
        own = sims[starts[c] : starts[c] + counts[c]]  # [its photos, query photos]
        b, a = np.unravel_index(int(np.argmax(own)), own.shape)
        pair = PhotoMatch(query_idx[int(a)], kept[c][int(b)], float(own[b, a]))
        hits.append(Hit(ids[c], scores[c], found[c][0], pair))
    return hits


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
