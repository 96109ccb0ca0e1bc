"""GET /similar filters (SimilarFilters) as a Qdrant Edge filter."""

from __future__ import annotations

from typing import Any

from qdrant_edge import FieldCondition, Filter, HasIdCondition, MatchValue, RangeFloat

from app.store.base import SimilarFilters


def build_filter(item_payload: dict[str, Any], filters: SimilarFilters) -> Filter | None:
    # The query item itself is dropped by the caller (it asks for k + 1): a has-id condition costs
    # more per HNSW step than the one extra result (BENCHMARKS.md, "Read path").
    must: list[Any] = []
    must_not: list[Any] = []
    if filters.category is not None:
        must.append(FieldCondition("category", match=MatchValue(filters.category)))
    if filters.min_price is not None or filters.max_price is not None:
        must.append(FieldCondition("price", range=RangeFloat(gte=filters.min_price, lte=filters.max_price)))
    if not filters.include_sold:
        # "not sold" as a positive match on the closed vocabulary (schemas.Status: on_sale | sold, always
        # stored): HNSW checks it against the keyword index, while a must_not made each 1M-shard search
        # ~3x slower (9.0 vs 3.3 ms, BENCHMARKS.md "Catalogue scale").
        must.append(FieldCondition("status", match=MatchValue("on_sale")))
    seller = item_payload.get("seller_id")
    if filters.exclude_same_seller and seller is not None:
        must_not.append(FieldCondition("seller_id", match=MatchValue(seller)))
    return Filter(must=must or None, must_not=must_not or None) if must or must_not else None


def with_ids(base: Filter | None, ids: list[str]) -> Filter:
    """`base` restricted to the points `ids` (a sealed shard's touched points: qdrant_edge/readers.py)."""
    if base is None:
        return Filter(must=[HasIdCondition(set(ids))])
    return Filter(must=[HasIdCondition(set(ids)), *(base.must or [])], must_not=base.must_not)
