"""Reads across a snapshot of shards: the candidate listings near some photo vectors, and pages by point id.

Both take the shard list of one `_reading()` snapshot (rank descending), so an item that a crash left
in two shards counts once, with its newest copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qdrant_edge import (
    FieldCondition,
    Filter,
    HasVectorCondition,
    MatchValue,
    Query,
    QueryBatchRequest,
    QueryRequest,
    ScrollRequest,
    SearchParams,
)

from app.core.errors import ModelNotReady
from app.store import photos
from app.store.base import Hit, ItemPage, SimilarFilters, point_id
from app.store.qdrant_edge.builder import record_vectors
from app.store.qdrant_edge.filters import build_filter
from app.store.qdrant_edge.shard import Shard
from app.store.versions import StoredVersion, photo_rows


def candidates(
    shards: list[Shard],
    queries: list[Any],
    limit: int,
    query_filter: Filter | None,
    using: str = "",
    leave_out: str | None = None,
    params: SearchParams | None = None,
) -> list[tuple[dict[str, Any], np.ndarray]]:
    """The listings among the `limit` nearest of any query vector (by MaxSim: their closest photo) over all
    shards, with their payload and photo rows [P, dim] of `using`, for an exact re-score (app/store/photos.py);
    `leave_out`: a point id never returned (the query item of GET /similar)."""
    requests = [
        QueryRequest(
            limit=limit + (leave_out is not None),  # room for the left-out point, dropped below
            query=Query.Nearest(np.asarray(q, dtype=np.float32).tolist(), using=using)
            if using
            else Query.Nearest(np.asarray(q, dtype=np.float32).tolist()),
            filter=query_filter,
            with_payload=False,  # payloads only for the candidates: reading them has a cost per shard (BENCHMARKS.md)
            with_vector=False,
            params=params,  # hnsw_ef and the int8 re-score of sealed shards; plain (hot) shards ignore them
        )
        for q in queries
    ]
    found: dict[str, tuple[float, Shard]] = {}  # point id -> (best score of any query, newest shard holding it)
    for s in shards:
        for answer in s.edge.query_batch(QueryBatchRequest(queries=requests)):
            for p in answer:
                score, holder = found.get(str(p.id), (p.score, s))
                found[str(p.id)] = (max(score, p.score), holder)
    found.pop(leave_out or "", None)
    by_shard: dict[int, tuple[Shard, list[str]]] = {}
    for point in photos.shortlist({pid: score for pid, (score, _) in found.items()}, limit):
        s = found[point][1]
        by_shard.setdefault(id(s), (s, []))[1].append(point)
    out = []  # an item deleted between the query and this read is left out, as if gone before
    for s, points in by_shard.values():
        for r in s.edge.retrieve(points, True, True):
            rows = photo_rows(record_vectors(r.vector).get(using))
            if rows is not None and r.payload:
                out.append((dict(r.payload), rows))
    return out


def similar_listings(
    shards: list[Shard],
    item_id: str,
    v: StoredVersion,
    k: int,
    filters: SimilarFilters,
    params: SearchParams | None = None,
) -> list[Hit] | None:
    """GET /similar on a snapshot: the listing's usable photos query the index, the candidates are re-scored
    exactly (app/store/photos.py). None for an unknown item; ModelNotReady when it lacks `v`'s vector."""
    if k < 1:
        raise ValueError("k must be >= 1")
    pid = point_id(item_id)
    item = next((records[0] for s in shards if (records := s.edge.retrieve([pid], True, True))), None)
    if item is None:
        return None
    rows = photo_rows(record_vectors(item.vector).get(v.vector))
    if rows is None:
        raise ModelNotReady(f"item {item_id!r} has no vector of model version {v.model_version!r} yet")
    payload = item.payload or {}
    usable = photos.usable(rows, payload)
    limit = photos.candidates_for(k)
    query_filter = build_filter(payload, filters)
    found = candidates(shards, [rows[i] for i in usable], limit, query_filter, v.vector, pid, params)
    return photos.rank(rows, usable, found, k)


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
