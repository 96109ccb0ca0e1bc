"""The VectorStore contract shared by the embedded (Qdrant Edge) and server (qdrant-client) stores.

Both implementations must behave identically; tests/integration/test_store_congruence.py runs one sequence of
operations on both and compares the answers.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

PhotoVectors = np.ndarray | list[np.ndarray]  # [N, dim]: one photo per listing; or N arrays [photos, dim]

# Fixed namespace: point id = uuid5(NAMESPACE, item_id). Changing it orphans every stored point.
POINT_NAMESPACE = uuid.UUID("6f1c1c52-3a0e-5b8e-9c55-1d1f8a5e0b7a")

# Payload fields that get a payload index (filters in GET /similar use them).
KEYWORD_FIELDS = ("category", "status", "seller_id")
FLOAT_FIELDS = ("price",)


def point_id(item_id: str) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, item_id))


def payload_point_id(payload: dict[str, Any]) -> str:
    """The point id of a payload a store is given; ValueError when it names no item."""
    item_id = payload.get("item_id")
    if not isinstance(item_id, str) or not item_id:
        raise ValueError("every payload needs a non-empty string item_id")
    return point_id(item_id)


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
class PhotoMatch:
    """The pair of photos that made a listing match: the query's photo, the result's photo, their cosine."""

    query_photo: int
    photo: int
    score: float


@dataclass(frozen=True)
class Hit:
    item_id: str
    score: float  # the listing-to-listing score (app/store/photos.py; boilerplate photos left out)
    payload: dict[str, Any]
    matched: PhotoMatch | None = None


VersionState = Literal["serving", "candidate", "retired"]


@dataclass(frozen=True)
class ModelVersion:
    model_version: str
    state: VersionState
    dim: int


class VersionsChanged(RuntimeError):
    """An upsert's vectors name other model versions than the active ones: the registry changed since the
    caller read it (another replica promoted, retired or added a version). Read the versions again and retry."""


class CollectionMismatch(RuntimeError):
    """Start-up only: the collection needs a model version no file provides, or a version's dimension differs."""


class VectorStore(Protocol):
    """Synchronous; the service calls it from worker threads.

    A store that cannot be reached (or is closed) raises app.core.errors.StoreUnavailable (503).

    Payload dicts always hold `item_id`; `upsert` replaces the whole payload and every vector of an item.
    `version` parameters name a model version; None means the serving one.
    """

    def open(self, models: Mapping[str, int]) -> list[ModelVersion]:
        """Open or create the collection for the model files given, {model_version: dim} in LOOKALIKE_MODEL_PATH
        order. New collection: first = serving, others = candidate. Existing: unknown versions are added as
        candidate (a new named vector; a retired version stays retired); CollectionMismatch if a serving or
        candidate version has no file (the message names it) or a known version's dim differs. Collections
        written before versions existed open unchanged: their version keeps the unnamed vector."""

    def versions(self) -> list[ModelVersion]: ...

    def promote(self, version: str) -> None:
        """Make `version` serving (atomic, durable); the old serving version becomes a candidate.
        ModelNotFound for an unknown or retired version; coverage is the caller's business."""

    def retire(self, version: str) -> None:
        """Candidate -> retired: its named vector is deleted (space freed). ModelServing for the serving one,
        ModelNotFound for an unknown or retired one (also when another replica changed it meanwhile)."""

    def upsert(self, payloads: list[dict[str, Any]], vectors: Mapping[str, PhotoVectors] | PhotoVectors) -> list[bool]:
        """Write listings whole (payload + every photo's L2-normalised vector of every ACTIVE version, all of
        them, else VersionsChanged): per version one [N, dim] array (one photo each) or N arrays [photos, dim];
        returns `created` per item. Durable on return. Convenience: a plain value is accepted while exactly
        one version is active. SinglePhotoVersion: several photos for a version from before photos."""

    def get(self, item_id: str) -> dict[str, Any] | None: ...

    def get_many(self, item_ids: list[str]) -> list[dict[str, Any] | None]:
        """The payloads of several items in one read (None for an unknown one), in the order asked."""

    def patch(self, item_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        """Set payload fields (value None removes the field); returns the new payload or None if unknown."""

    def delete(self, item_id: str) -> bool: ...

    def similar(self, item_id: str, k: int, filters: SimilarFilters, version: str | None = None) -> list[Hit] | None:
        """Top-k listings by the listing score of their photos (app/store/photos.py) with `version`'s vectors (None:
        serving), never the item itself, each with its `matched` pair; None if item_id is unknown;
        ModelNotReady if the item has no vector of that version; ModelNotFound if unknown/retired."""

    def similar_to_vector(
        self, vector: np.ndarray, k: int, filters: SimilarFilters, version: str | None = None
    ) -> list[Hit]:
        """Top-k listings by their best photo's cosine to an L2-normalised vector of `version` (None: serving),
        matched.query_photo 0; same filters as `similar`."""

    def photo_copies(
        self, vector: np.ndarray, min_cosine: float, limit: int, leave_out: str, version: str | None = None
    ) -> dict[str, list[int]]:
        """Up to `limit` listings (never `leave_out`) holding a photo at cosine >= `min_cosine` to `vector`:
        {item_id: those photos' indexes}. Sold listings count too (boilerplate marking)."""

    def coverage(self, version: str) -> tuple[int, int]:
        """(items having `version`'s vector, all items)."""

    def missing(self, version: str, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """Payloads of up to `limit` items lacking `version`'s vector in point-id order from point id `cursor`
        (inclusive), and the point id the next page starts at (None: done)."""

    def set_vector(self, item_id: str, version: str, vector: np.ndarray, write_id: str | None) -> bool:
        """Write only `version`'s vector of the item (every photo: [photos, dim]; [dim] for one photo), only if
        it exists and its payload's write_id equals
        `write_id`; never creates a point, never touches the payload or other vectors. False when skipped.
        `write_id` None: the item must have no write_id (written before write ids existed)."""

    def get_meta(self, key: str) -> dict[str, Any] | None:
        """A small JSON document kept with the collection (shared by replicas in server mode)."""

    def put_meta(self, key: str, value: dict[str, Any]) -> None: ...

    def list_items(self, limit: int, cursor: str | None, category: str | None, status: str | None) -> ItemPage:
        """Up to `limit` payloads ordered by point id, starting at point id `cursor` (inclusive; None: first).

        Point ids never change, so paging with `next_point` returns every item that exists throughout
        exactly once, whatever is written meanwhile.
        """

    def count(self) -> int: ...

    def ready(self) -> bool: ...

    def close(self) -> None: ...
