"""The one query a listing's photos make on a shard: shared by the serving process and the reader processes."""

from __future__ import annotations

import numpy as np
from qdrant_edge import Filter, Query, QueryRequest, SearchParams


def listing_query(
    vectors: np.ndarray, using: str, limit: int, query_filter: Filter | None, params: SearchParams | None
) -> QueryRequest:
    """One query for a listing's usable photo vectors [P, dim]: on a MaxSim multivector, several rows score
    each listing sum_i max_j cos(q_i, d_j) in one graph walk (app/store/photos.py); one row is a plain vector."""
    rows = [v.tolist() for v in vectors]
    vector = rows if len(rows) > 1 else rows[0]
    return QueryRequest(
        limit=limit,
        query=Query.Nearest(vector, using=using) if using else Query.Nearest(vector),
        filter=query_filter,
        with_payload=False,  # payloads only for the candidates: reading them has a cost per shard (BENCHMARKS.md)
        with_vector=False,
        params=params,
    )
