"""Reads across a snapshot of shards: the nearest points to a vector, and pages by point id.

Both take the shard list of one `_reading()` snapshot (rank descending), so an item that a crash left
in two shards counts once, with its newest copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qdrant_edge import FieldCondition, Filter, HasVectorCondition, MatchValue, Query, QueryRequest, ScrollRequest

from app.store.base import Hit, ItemPage
from app.store.qdrant_edge.shard import Shard


def nearest(
    shards: list[Shard],
    vector: Any,
    k: int,
    query_filter: Filter | None,
    using: str = "",
    leave_out: str | None = None,
) -> list[Hit]:
    """Top-k by cosine over all shards, ties broken by item_id; `leave_out`: a point id never returned
    (the query item of GET /similar). Payloads are read for the winners only."""
    if k < 1:
        raise ValueError("k must be >= 1")
    query = np.asarray(vector, dtype=np.float32).tolist()
    request = QueryRequest(
        limit=k + (leave_out is not None),  # room for the left-out point, dropped below
        query=Query.Nearest(query, using=using) if using else Query.Nearest(query),
        filter=query_filter,
        with_payload=False,  # payloads only for the winners: reading them has a cost per shard (BENCHMARKS.md)
        with_vector=False,
    )
    found: dict[str, tuple[float, Shard]] = {}  # point id -> (score, newest shard holding it)
    for s in shards:
        for p in s.edge.query(request):
            found.setdefault(str(p.id), (p.score, s))
    found.pop(leave_out or "", None)
    if not found:
        return []
    # The k best scores, plus anything tied with the k-th (ties are broken by item_id below).
    cutoff = sorted((score for score, _ in found.values()), reverse=True)[:k][-1]
    by_shard: dict[int, tuple[Shard, list[str]]] = {}
    for point, (score, s) in found.items():
        if score >= cutoff:
            by_shard.setdefault(id(s), (s, []))[1].append(point)
    hits = []  # an item deleted between the query and this read is left out, as if gone before
    for s, points in by_shard.values():
        for r in s.edge.retrieve(points, True, False):
            payload = r.payload or {}
            hits.append(Hit(str(payload.get("item_id", r.id)), found[str(r.id)][0], dict(payload)))
    return sorted(hits, key=lambda h: (-h.score, h.item_id))[:k]


def page(shards: list[Shard], limit: int, cursor: str | None, category: str | None, status: str | None) -> ItemPage:
    """Scroll every shard from `cursor` (each ordered by point id, offset included) and merge by point id.

    Each shard gives its first limit + 1 matches; the limit + 1 smallest ids of the union are among
    them, so the merge is exact: `limit` items and the id the next page starts at.
    """
    must: list[Any] = [
        FieldCondition(key, match=MatchValue(value))
        for key, value in (("category", category), ("status", status))
        if value is not None
    ]
    return _merged_page(shards, Filter(must=must) if must else None, limit, cursor)


def lacking(shards: list[Shard], vector: str, limit: int, cursor: str | None) -> ItemPage:
    """Like `page`, for the items lacking the named vector `vector` (a model version's backfill)."""
    return _merged_page(shards, Filter(must_not=[HasVectorCondition(vector)]), limit, cursor)


def _merged_page(shards: list[Shard], where: Filter | None, limit: int, cursor: str | None) -> ItemPage:
    request = ScrollRequest(offset=cursor, limit=limit + 1, filter=where, with_payload=True, with_vector=False)
    merged: dict[str, dict[str, Any]] = {}
    for s in shards:
        records, _ = s.edge.scroll(request)
        for r in records:
            merged.setdefault(str(r.id), dict(r.payload or {}))
    ids = sorted(merged)[: limit + 1]
    next_point = ids[limit] if len(ids) > limit else None
    return ItemPage([merged[i] for i in ids[:limit]], next_point)
