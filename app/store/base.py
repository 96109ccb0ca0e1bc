"""The VectorStore contract shared by the embedded (Qdrant Edge) and server (qdrant-client) stores.

Both implementations must behave identically; tests/integration/test_store_congruence.py runs one sequence of
operations on both and compares the answers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

# Fixed namespace: point id = uuid5(NAMESPACE, item_id). Changing it orphans every stored point.
POINT_NAMESPACE = uuid.UUID("6f1c1c52-3a0e-5b8e-9c55-1d1f8a5e0b7a")

# Payload fields that get a payload index (filters in GET /similar use them).
KEYWORD_FIELDS = ("category", "status", "seller_id")
FLOAT_FIELDS = ("price",)


def point_id(item_id: str) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, item_id))


VersionState = Literal["serving", "candidate", "retired"]


@dataclass(frozen=True)
class ModelVersion:
    model_version: str
    state: VersionState
    dim: int


@dataclass(frozen=True)
class SimilarFilters:
    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    include_sold: bool = False
    exclude_same_seller: bool = False  # hide items whose seller_id equals the query item's
    # similar_to_vector has no query item: exclude_same_seller hides this seller's items (None: no effect)
    seller_id: str | None = None


@dataclass(frozen=True)
class ItemPage:
    """One page of list_items: payloads in point-id order, and the point id the next page starts at."""

    items: list[dict[str, Any]]
    next_point: str | None


@dataclass(frozen=True)
class Hit:
    item_id: str
    score: float
    payload: dict[str, Any]


class CollectionMismatch(RuntimeError):
    """Start-up only: the stored collection was built with another embedding model or dimension."""


class VectorStore(Protocol):
    """Synchronous; the service calls it from worker threads.

    A store that cannot be reached (or is closed) raises app.core.errors.StoreUnavailable (503).

    Payload dicts always hold `item_id`; `upsert` replaces the whole payload and vector of an item.
    """

    def ensure_collection(self, dim: int, model_version: str) -> None:
        """Create the collection or check it matches; raises CollectionMismatch."""

    def upsert(self, payloads: list[dict[str, Any]], vectors: np.ndarray) -> list[bool]:
        """Write items (payload + L2-normalised vector); returns `created` per item. Durable on return."""

    def get(self, item_id: str) -> dict[str, Any] | None: ...

    def patch(self, item_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        """Set payload fields (value None removes the field); returns the new payload or None if unknown."""

    def delete(self, item_id: str) -> bool: ...

    def similar(self, item_id: str, k: int, filters: SimilarFilters) -> list[Hit] | None:
        """Top-k by cosine, never the item itself; None if item_id is unknown."""

    def similar_to_vector(self, vector: np.ndarray, k: int, filters: SimilarFilters) -> list[Hit]:
        """Top-k by cosine to an L2-normalised vector (no item is left out); same filters as `similar`."""

    def list_items(self, limit: int, cursor: str | None, category: str | None, status: str | None) -> ItemPage:
        """Up to `limit` payloads ordered by point id, starting at point id `cursor` (inclusive; None: first).

        Point ids never change, so paging with `next_point` returns every item that exists throughout
        exactly once, whatever is written meanwhile.
        """

    def count(self) -> int: ...

    def ready(self) -> bool: ...

    def close(self) -> None: ...
