"""GET /similar's filters as a qdrant-client Filter (server mode; the embedded store has qdrant_edge/filters.py)."""

from __future__ import annotations

from typing import Any

from qdrant_client import models

from app.store.base import SimilarFilters, point_id


def build_filter(item_id: str | None, seller_id: Any, filters: SimilarFilters) -> models.Filter:
    """GET /similar's filters; `item_id` (the query item, left out) is None for a query by vector."""
    must: list[models.Condition] = []
    must_not: list[models.Condition] = []
    if item_id is not None:
        must_not.append(models.HasIdCondition(has_id=[point_id(item_id)]))
    if not filters.include_sold:
        must_not.append(models.FieldCondition(key="status", match=models.MatchValue(value="sold")))
    if filters.category is not None:
        must.append(models.FieldCondition(key="category", match=models.MatchValue(value=filters.category)))
    if filters.min_price is not None or filters.max_price is not None:
        must.append(
            models.FieldCondition(key="price", range=models.Range(gte=filters.min_price, lte=filters.max_price))
        )
    if filters.exclude_same_seller and isinstance(seller_id, str):
        must_not.append(models.FieldCondition(key="seller_id", match=models.MatchValue(value=seller_id)))
    return models.Filter(must=must or None, must_not=must_not or None)
