"""ServerStore: the VectorStore on a Qdrant server (or cluster) through qdrant-client.

Writes use wait=True, so an acknowledged write is applied (and in the server's WAL) before we answer.
Connection failures and timeouts become StoreUnavailable (503 store_unavailable, Retry-After);
the client reconnects by itself, so the service recovers without a restart.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client import models as qdrant_models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from app.core.errors import ModelNotReady, StoreUnavailable
from app.core.settings import Settings
from app.store import photos
from app.store import qdrant_server_search as search
from app.store.base import (
    FLOAT_FIELDS,
    KEYWORD_FIELDS,
    CollectionMismatch,
    Hit,
    ItemPage,
    ModelVersion,
    PhotoVectors,
    SimilarFilters,
    point_id,
)
from app.store.qdrant_filters import build_filter
from app.store.qdrant_registry import METADATA_VERSIONS, NOT_AN_ITEM, RegistryPoint, metadata_versions, vector_names
from app.store.versions import (
    StoredVersion,
    find,
    open_versions,
    point_vector,
    promoted,
    retire_raced,
    retired,
    stored_vector,
    vectors_by_name,
)

META_PREFIX = "lookalike.meta."  # get_meta/put_meta documents
REGISTRY_TTL_S = 1.0


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


class ServerStore:
    def __init__(
        self, client: QdrantClient, collection: str, *, shard_number: int = 1, replication_factor: int = 1
    ) -> None:
        self._client = client
        self.collection = collection
        self.shard_number = shard_number
        self.replication_factor = replication_factor
        self._rows: list[StoredVersion] = []
        self._rows_at = 0.0
        self._registry_point = RegistryPoint(client, collection)

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

    # ------------------------------------------------------------ versions (app/store/qdrant_registry.py)

    def open(self, models: Mapping[str, int]) -> list[ModelVersion]:
        with _unavailable_on_failure():
            if not self._client.collection_exists(self.collection):
                self._create(open_versions(None, models, repr(self.collection))[0])
            config = self._client.get_collection(self.collection).config
            if self._registry_point.read() is None:  # created before the registry point: seed it from metadata
                stored = metadata_versions(config)
                if stored is None:
                    raise CollectionMismatch(
                        f"collection {self.collection!r} exists but records no model version (not written by this "
                        "service?). Set LOOKALIKE_COLLECTION to a new name and re-index, or point "
                        "LOOKALIKE_MODEL_PATH at the right collection's models"
                    )
                self._registry_point.seed(stored)

            def add_candidates(rows: list[StoredVersion]) -> list[StoredVersion] | None:
                # Vector first, registry second: a crash in between leaves an unused vector that the next
                # open finds (and keeps); retire writes the registry first, so a leftover retired vector is
                # deleted below.
                new_rows, added = open_versions(rows, models, repr(self.collection))
                for v in added:
                    self._create_vector(v)
                return new_rows if added else None

            rows = self._registry_point.change(add_candidates)
            names = vector_names(self._client.get_collection(self.collection).config)
            for v in rows:
                if not v.active and v.vector in names:
                    self._client.delete_vector_name(self.collection, v.vector)
        self._cache(rows)
        return [v.public() for v in rows]

    def _create(self, rows: list[StoredVersion]) -> None:
        """A new collection: its vectors, payload indexes and registry (also written to its metadata, so a
        replica opening it before the registry point exists seeds the same one)."""
        qm = qdrant_models
        with contextlib.suppress(UnexpectedResponse, ValueError):  # another replica created it meanwhile
            self._client.create_collection(
                self.collection,
                vectors_config={v.vector: search.vector_params(v) for v in rows},
                shard_number=self.shard_number,
                replication_factor=self.replication_factor,
                metadata={METADATA_VERSIONS: [v.to_json() for v in rows]},
            )
        with warnings.catch_warnings():  # local mode (tests) warns that indexes have no effect there
            warnings.simplefilter("ignore", UserWarning)
            for field in KEYWORD_FIELDS:
                self._client.create_payload_index(self.collection, field, qm.PayloadSchemaType.KEYWORD)
            for field in FLOAT_FIELDS:
                self._client.create_payload_index(self.collection, field, qm.PayloadSchemaType.FLOAT)
        self._registry_point.seed(rows)

    def _create_vector(self, v: StoredVersion) -> None:
        """Add a candidate's named vector unless it exists (another replica opening with the same file)."""
        if v.vector in vector_names(self._client.get_collection(self.collection).config):
            return
        try:
            self._client.create_vector_name(self.collection, v.vector, search.dense_config(v))
        except (UnexpectedResponse, ValueError):
            if v.vector not in vector_names(self._client.get_collection(self.collection).config):
                raise

    def versions(self) -> list[ModelVersion]:
        return [v.public() for v in self._registry(fresh=True)]

    def promote(self, version: str) -> None:
        with _unavailable_on_failure():
            rows = self._registry_point.change(lambda current: promoted(current, version))
        self._cache(rows)

    def retire(self, version: str) -> None:
        targets: list[StoredVersion] = []

        def retire_it(current: list[StoredVersion]) -> list[StoredVersion]:
            rows, target = retired(current, version)
            targets.append(target)
            return rows

        with _unavailable_on_failure():
            rows = self._registry_point.change(retire_it)  # first: no write carries the vector any more
            self._client.delete_vector_name(self.collection, targets[-1].vector)
        self._cache(rows)

    def get_meta(self, key: str) -> dict[str, Any] | None:
        with _unavailable_on_failure():
            metadata = self._client.get_collection(self.collection).config.metadata or {}
        value = metadata.get(META_PREFIX + key)
        return dict(value) if isinstance(value, dict) else None

    def put_meta(self, key: str, value: dict[str, Any]) -> None:
        with _unavailable_on_failure():
            self._client.update_collection(self.collection, metadata={META_PREFIX + key: value})

    def _cache(self, rows: list[StoredVersion]) -> None:
        self._rows, self._rows_at = rows, time.monotonic()

    def _registry(self, fresh: bool = False) -> list[StoredVersion]:
        """The version registry; re-read at most every REGISTRY_TTL_S so a promote by another replica is
        seen within that time (`fresh`: re-read now)."""
        if fresh or not self._rows or time.monotonic() - self._rows_at > REGISTRY_TTL_S:
            with _unavailable_on_failure():
                registry = self._registry_point.read()
            if registry is None:
                raise StoreUnavailable(f"collection {self.collection!r} has no model versions (not opened)")
            self._cache(registry.rows)
        return self._rows

    # ------------------------------------------------------------ items

    def upsert(self, payloads: list[dict[str, Any]], vectors: Mapping[str, PhotoVectors] | PhotoVectors) -> list[bool]:
        """See VectorStore.upsert (a plain array while exactly one version is active)."""
        by_name = vectors_by_name(self._registry(), len(payloads), vectors)
        ids = [point_id(p["item_id"]) for p in payloads]
        points = [
            models.PointStruct(id=pid, vector={n: point_vector(n, a[i]) for n, a in by_name.items()}, payload=payload)
            for i, (pid, payload) in enumerate(zip(ids, payloads, strict=True))
        ]
        with _unavailable_on_failure():
            existing = {str(r.id) for r in self._client.retrieve(self.collection, ids, with_payload=False)}
            self._client.upsert(self.collection, points=points, wait=True)
        return [pid not in existing for pid in ids]

    def set_vector(self, item_id: str, version: str, vector: np.ndarray, write_id: str | None) -> bool:
        v = find(self._registry(), version)
        stored = stored_vector(v, vector)
        record = self._retrieve(item_id)
        if record is None or (record.payload or {}).get("write_id") != write_id:
            return False
        same_write = models.Filter(
            must=[
                models.FieldCondition(key="write_id", match=models.MatchValue(value=write_id))
                if write_id is not None
                else models.IsEmptyCondition(is_empty=models.PayloadField(key="write_id"))
            ]
        )
        try:
            with _unavailable_on_failure():
                # The condition is checked by Qdrant at write time: an item replaced since the read above
                # keeps its newer vector; update_vectors never creates a point.
                self._client.update_vectors(
                    self.collection,
                    [models.PointVectors(id=point_id(item_id), vector={v.vector: stored})],
                    update_filter=same_write,
                    wait=True,
                )
        except KeyError:  # local mode: the point was deleted since the read
            return False
        except UnexpectedResponse as exc:  # server: 404 for a point deleted since the read
            if exc.status_code == 404:
                return False
            raise
        return True

    def _retrieve(self, item_id: str, with_vector: bool = False) -> models.Record | None:
        with _unavailable_on_failure():
            records = self._client.retrieve(
                self.collection, [point_id(item_id)], with_payload=True, with_vectors=with_vector
            )
        return records[0] if records else None

    def get(self, item_id: str) -> dict[str, Any] | None:
        return self.get_many([item_id])[0]

    def get_many(self, item_ids: list[str]) -> list[dict[str, Any] | None]:
        pids = [point_id(item_id) for item_id in item_ids]
        with _unavailable_on_failure():
            records = self._client.retrieve(self.collection, list(dict.fromkeys(pids)), with_payload=True)
        found = {str(r.id): r.payload or {} for r in records}
        return [dict(found[pid]) if pid in found else None for pid in pids]

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

    def similar(self, item_id: str, k: int, filters: SimilarFilters, version: str | None = None) -> list[Hit] | None:
        v = find(self._registry(), version)
        with self._retire_raced(version):
            with _unavailable_on_failure():
                records = self._client.retrieve(
                    self.collection,
                    [point_id(item_id)],
                    with_payload=True,
                    with_vectors=[v.vector] if v.vector else True,
                )
            if not records:
                return None
            rows = search.stored_rows(v, records[0])
            if rows is None:
                raise ModelNotReady(f"item {item_id!r} has no vector of model version {v.model_version!r} yet")
            payload = records[0].payload or {}
            usable = photos.usable(rows, payload)
            query_filter = build_filter(item_id, payload.get("seller_id"), filters)
            found = self._candidates([rows[i] for i in usable], photos.candidates_for(k), v, query_filter)
            return photos.rank(rows, usable, found, k, both_ways=True)

    def similar_to_vector(
        self, vector: np.ndarray, k: int, filters: SimilarFilters, version: str | None = None
    ) -> list[Hit]:
        v = find(self._registry(), version)
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        with self._retire_raced(version):
            query_filter = build_filter(None, filters.seller_id, filters)
            found = self._candidates([query[0]], photos.candidates_for(k), v, query_filter)
            return photos.rank(query, [0], found, k, both_ways=False)

    def photo_copies(
        self, vector: np.ndarray, min_cosine: float, limit: int, leave_out: str, version: str | None = None
    ) -> dict[str, list[int]]:
        v = find(self._registry(), version)
        others = models.Filter(must_not=[models.HasIdCondition(has_id=[point_id(leave_out)])])
        with self._retire_raced(version):
            return photos.copies(vector, min_cosine, self._candidates([vector], limit, v, others))

    def _retire_raced(self, version: str | None) -> contextlib.AbstractContextManager[None]:
        # another replica may have retired the version within this one's REGISTRY_TTL_S: re-read it now
        return retire_raced(lambda: find(self._registry(fresh=True), version))

    def _candidates(
        self, queries: list[np.ndarray], limit: int, v: StoredVersion, query_filter: models.Filter
    ) -> list[tuple[dict[str, Any], np.ndarray]]:
        with _unavailable_on_failure():
            return search.candidates(self._client, self.collection, queries, limit, v, query_filter)

    def coverage(self, version: str) -> tuple[int, int]:
        v = find(self._registry(), version)
        has = models.Filter(must=[models.HasVectorCondition(has_vector=v.vector)])
        with _unavailable_on_failure():
            having = self._client.count(self.collection, count_filter=has, exact=True).count
        return having, self.count()

    def missing(self, version: str, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        v = find(self._registry(), version)
        lacks = models.Filter(must_not=[models.HasVectorCondition(has_vector=v.vector), NOT_AN_ITEM])
        with _unavailable_on_failure():
            records, next_offset = self._client.scroll(  # ordered by point id; the offset is included
                self.collection, scroll_filter=lacks, limit=limit, offset=cursor, with_payload=True, with_vectors=False
            )
        return [dict(r.payload or {}) for r in records], None if next_offset is None else str(next_offset)

    def list_items(self, limit: int, cursor: str | None, category: str | None, status: str | None) -> ItemPage:
        must: list[models.Condition] = [
            models.FieldCondition(key=key, match=models.MatchValue(value=value))
            for key, value in (("category", category), ("status", status))
            if value is not None
        ]
        with _unavailable_on_failure():
            records, next_offset = self._client.scroll(  # ordered by point id; the offset is included
                self.collection,
                scroll_filter=models.Filter(must=must or None, must_not=[NOT_AN_ITEM]),
                limit=limit,
                offset=cursor,
                with_payload=True,
                with_vectors=False,
            )
        items = [dict(r.payload or {}) for r in records]
        return ItemPage(items, None if next_offset is None else str(next_offset))

    def count(self) -> int:
        items = models.Filter(must_not=[NOT_AN_ITEM])
        with _unavailable_on_failure():
            return self._client.count(self.collection, count_filter=items, exact=True).count

    def ready(self) -> bool:
        try:
            with _unavailable_on_failure():
                return self._client.collection_exists(self.collection)
        except StoreUnavailable:
            return False

    def close(self) -> None:
        self._client.close()
