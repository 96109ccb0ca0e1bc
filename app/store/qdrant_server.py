"""ServerStore: the VectorStore on a Qdrant server (or cluster) through qdrant-client.

Writes use wait=True, so an acknowledged write is applied (and in the server's WAL) before we answer.
Connection failures and timeouts become StoreUnavailable (503 store_unavailable, Retry-After);
the client reconnects by itself, so the service recovers without a restart.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from app.core.errors import StoreUnavailable
from app.core.settings import Settings
from app.store.base import (
    FLOAT_FIELDS,
    KEYWORD_FIELDS,
    CollectionMismatch,
    Hit,
    ItemPage,
    SimilarFilters,
    point_id,
)

MODEL_VERSION_KEY = "lookalike.model_version"


@contextlib.contextmanager
def _unavailable_on_failure() -> Iterator[None]:
    """Qdrant unreachable, hanging, overloaded or answering garbage -> StoreUnavailable (503).

    Only a 400/422 (the request itself was wrong: our bug) stays an error that answers 500.
    """
    try:
        yield
    except (ResponseHandlingException, httpx.TransportError, ConnectionError, TimeoutError) as exc:
        raise StoreUnavailable(f"Qdrant is unreachable: {type(exc).__name__}: {exc}") from None
    except UnexpectedResponse as exc:
        if exc.status_code in (400, 422):
            raise
        raise StoreUnavailable(f"Qdrant answered HTTP {exc.status_code}") from None
    except (ValueError, AssertionError) as exc:
        # qdrant-client raises these for a body that is not JSON or not Qdrant's shape: not a Qdrant.
        raise StoreUnavailable(f"Qdrant's answer could not be read: {type(exc).__name__}") from None


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


class ServerStore:
    def __init__(
        self, client: QdrantClient, collection: str, *, shard_number: int = 1, replication_factor: int = 1
    ) -> None:
        self._client = client
        self.collection = collection
        self.shard_number = shard_number
        self.replication_factor = replication_factor

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerStore:
        client = QdrantClient(
            url=settings.qdrant_url,
            api_key=settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None,
            timeout=int(max(1, settings.qdrant_timeout_s)),
        )
        return cls(
            client,
            settings.collection,
            shard_number=settings.shard_number,
            replication_factor=settings.replication_factor,
        )

    def ensure_collection(self, dim: int, model_version: str) -> None:
        with _unavailable_on_failure():
            if not self._client.collection_exists(self.collection):
                self._client.create_collection(
                    self.collection,
                    vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
                    shard_number=self.shard_number,
                    replication_factor=self.replication_factor,
                    metadata={MODEL_VERSION_KEY: model_version},
                )
                with warnings.catch_warnings():  # local mode (tests) warns that indexes have no effect there
                    warnings.simplefilter("ignore", UserWarning)
                    for field in KEYWORD_FIELDS:
                        self._client.create_payload_index(self.collection, field, models.PayloadSchemaType.KEYWORD)
                    for field in FLOAT_FIELDS:
                        self._client.create_payload_index(self.collection, field, models.PayloadSchemaType.FLOAT)
                return
            config = self._client.get_collection(self.collection).config
        size = config.params.vectors.size if isinstance(config.params.vectors, models.VectorParams) else None
        stored_version = (config.metadata or {}).get(MODEL_VERSION_KEY)
        if size != dim or stored_version != model_version:
            raise CollectionMismatch(
                f"collection {self.collection!r} holds vectors of model {stored_version!r} (dim {size}), "
                f"but the loaded model is {model_version!r} (dim {dim}); vectors of different models are not "
                "comparable. Set LOOKALIKE_COLLECTION to a new name and re-index, or point "
                "LOOKALIKE_MODEL_PATH at the model this collection was built with."
            )

    def upsert(self, payloads: list[dict[str, Any]], vectors: np.ndarray) -> list[bool]:
        ids = [point_id(p["item_id"]) for p in payloads]
        points = [
            models.PointStruct(id=pid, vector=vec.tolist(), payload=payload)
            for pid, vec, payload in zip(ids, vectors, payloads, strict=True)
        ]
        with _unavailable_on_failure():
            existing = {str(r.id) for r in self._client.retrieve(self.collection, ids, with_payload=False)}
            self._client.upsert(self.collection, points=points, wait=True)
        return [pid not in existing for pid in ids]

    def _retrieve(self, item_id: str, with_vector: bool = False) -> models.Record | None:
        with _unavailable_on_failure():
            records = self._client.retrieve(
                self.collection, [point_id(item_id)], with_payload=True, with_vectors=with_vector
            )
        return records[0] if records else None

    def get(self, item_id: str) -> dict[str, Any] | None:
        record = self._retrieve(item_id)
        return dict(record.payload or {}) if record else None

    def patch(self, item_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        record = self._retrieve(item_id)
        if record is None:
            return None
        pid = point_id(item_id)
        to_set = {k: v for k, v in fields.items() if v is not None}
        to_delete = [k for k, v in fields.items() if v is None]
        with _unavailable_on_failure():
            if to_set:
                self._client.set_payload(self.collection, to_set, points=[pid], wait=True)
            if to_delete:
                self._client.delete_payload(self.collection, to_delete, points=[pid], wait=True)
        payload = {k: v for k, v in (record.payload or {}).items() if k not in to_delete}
        payload.update(to_set)
        return payload

    def delete(self, item_id: str) -> bool:
        if self._retrieve(item_id) is None:
            return False
        with _unavailable_on_failure():
            self._client.delete(self.collection, models.PointIdsList(points=[point_id(item_id)]), wait=True)
        return True

    def similar(self, item_id: str, k: int, filters: SimilarFilters) -> list[Hit] | None:
        record = self._retrieve(item_id, with_vector=True)
        if record is None:
            return None
        seller = (record.payload or {}).get("seller_id")
        with _unavailable_on_failure():
            response = self._client.query_points(
                self.collection,
                query=list(record.vector),  # type: ignore[arg-type]
                query_filter=build_filter(item_id, seller, filters),
                limit=k,
                with_payload=True,
            )
        hits = [Hit(str(p.payload["item_id"]), float(p.score), dict(p.payload)) for p in response.points if p.payload]
        return sorted(hits, key=lambda h: (-h.score, h.item_id))

    def similar_to_vector(self, vector: np.ndarray, k: int, filters: SimilarFilters) -> list[Hit]:
        with _unavailable_on_failure():
            response = self._client.query_points(
                self.collection,
                query=np.asarray(vector, dtype=np.float32).tolist(),
                query_filter=build_filter(None, filters.seller_id, filters),
                limit=k,
                with_payload=True,
            )
        hits = [Hit(str(p.payload["item_id"]), float(p.score), dict(p.payload)) for p in response.points if p.payload]
        return sorted(hits, key=lambda h: (-h.score, h.item_id))

    def list_items(self, limit: int, cursor: str | None, category: str | None, status: str | None) -> ItemPage:
        must: list[models.Condition] = [
            models.FieldCondition(key=key, match=models.MatchValue(value=value))
            for key, value in (("category", category), ("status", status))
            if value is not None
        ]
        with _unavailable_on_failure():
            records, next_offset = self._client.scroll(  # ordered by point id; the offset is included
                self.collection,
                scroll_filter=models.Filter(must=must) if must else None,
                limit=limit,
                offset=cursor,
                with_payload=True,
                with_vectors=False,
            )
        items = [dict(r.payload or {}) for r in records]
        return ItemPage(items, None if next_offset is None else str(next_offset))

    def count(self) -> int:
        with _unavailable_on_failure():
            return self._client.count(self.collection, exact=True).count

    def ready(self) -> bool:
        try:
            with _unavailable_on_failure():
                return self._client.collection_exists(self.collection)
        except StoreUnavailable:
            return False

    def close(self) -> None:
        self._client.close()
