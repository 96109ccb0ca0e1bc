"""What the serving process and the reader processes share: the one query a listing's photos make on a shard,
and the records a reader sends back."""

from __future__ import annotations

from typing import Any

import numpy as np
from qdrant_edge import Filter, Query, QueryRequest, SearchParams

Record = tuple[dict[str, Any], bytes, int]  # payload, photo rows (float32 bytes), photo count


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


def decode(record: Record, dim: int) -> tuple[dict[str, Any], np.ndarray]:
    """A reader's record as a candidate: its payload and photo rows [P, dim] (no copy)."""
    payload, data, count = record
    return payload, np.frombuffer(data, dtype=np.float32).reshape(count, dim)
