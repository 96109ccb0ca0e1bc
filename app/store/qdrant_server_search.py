"""The server store's look-alike reads: candidate listings from the MaxSim index, re-scored exactly.

One query per query listing (its usable photos as one multivector: MaxSim scores each listing
sum_i max_j cos(q_i, d_j)); the candidates' payloads and photo vectors come back in one retrieve, and
app/store/photos.py scores them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from app.store import photos
from app.store.versions import StoredVersion, photo_rows


def vector_params(v: StoredVersion) -> models.VectorParams:
    """A new collection's vector of `v`: a MaxSim multivector for a version that holds every photo."""
    return models.VectorParams(size=v.dim, distance=models.Distance.COSINE, multivector_config=_max_sim(v))


def dense_config(v: StoredVersion) -> models.DenseVectorNameConfig:
    """A version added to an existing collection: the same layout as vector_params."""
    config = models.DenseVectorConfig(size=v.dim, distance=models.Distance.COSINE, multivector_config=_max_sim(v))
    return models.DenseVectorNameConfig(dense=config)


def _max_sim(v: StoredVersion) -> models.MultiVectorConfig | None:
    return models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM) if v.multi else None


def query_vector(v: StoredVersion, vectors: list[np.ndarray]) -> list[Any]:
    """A listing's photo vectors as a query of `v`: a multivector (MaxSim) or, before photos, a plain vector."""
    rows = [np.asarray(q, dtype=np.float32).reshape(-1).tolist() for q in vectors]
    return rows if v.multi else rows[0]


def stored_rows(v: StoredVersion, record: models.Record) -> np.ndarray | None:
    """A record's photo rows [P, dim] of `v` (None: it has no vector of `v`)."""
    vector = record.vector.get(v.vector) if isinstance(record.vector, dict) else record.vector
    return photo_rows(vector)


def candidates(
    client: QdrantClient,
    collection: str,
    queries: list[np.ndarray],
    limit: int,
    v: StoredVersion,
    query_filter: models.Filter | None,
) -> list[tuple[dict[str, Any], np.ndarray]]:
    """The `limit` listings nearest to the query photos (one MaxSim query), with their payloads and photo rows."""
    answer = client.query_points(
        collection,
        query_vector(v, queries),
        using=v.vector or None,
        query_filter=query_filter,
        limit=limit,
        with_payload=False,
    )
    scores: dict[Any, float] = {p.id: p.score for p in answer.points}
    ids = photos.shortlist(scores, limit)
    if not ids:
        return []
    records = client.retrieve(collection, ids, with_payload=True, with_vectors=[v.vector] if v.vector else True)
    found = []
    for r in records:
        rows = stored_rows(v, r)
        if rows is not None and r.payload:
            found.append((dict(r.payload), rows))
    return found
