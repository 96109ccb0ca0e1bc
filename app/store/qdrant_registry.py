"""The model-version registry of a server-mode collection: one reserved point, changed by compare-and-set.

Several replicas change the registry (promote, retire, a new candidate at start-up). A collection's metadata
cannot be updated conditionally, so two read-modify-writes of it could both land and the later one bring a
retired version back. The registry lives in the payload of one point instead, with a generation number: a
change is a payload update filtered on the generation it was computed from, so of two changes made from the
same generation only the first applies. The writer then reads the point back: its own token there means it
won; otherwise it reads the new registry and decides again (a promote of a version retired meanwhile is
ModelNotFound, a retire of a version promoted meanwhile ModelServing), so concurrent changes converge.

The point has no vector: searches never see it, and the scans (count, list, missing) leave it out.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qdrant_client import QdrantClient, models

from app.core.errors import StoreUnavailable
from app.store.versions import StoredVersion

MODEL_VERSION_KEY = "lookalike.model_version"  # collections from before versions: their one model
# The registry as the collection's metadata held it before the registry point; written at creation too, so that a
# replica opening a new collection before its registry point exists seeds the same registry.
METADATA_VERSIONS = "lookalike.versions"
REGISTRY_POINT = "00000000-0000-0000-0000-000000000000"  # never an item's point id: uuid5 ids carry version 5
GENERATION = "lookalike_registry_generation"
WRITER = "lookalike_registry_writer"
VERSIONS = "lookalike_registry_versions"
CAS_ATTEMPTS = 20  # each lost attempt means another replica's change landed: this many in a row is not normal

# Scans add this to their filter's must_not: the registry point is not an item.
NOT_AN_ITEM = models.HasIdCondition(has_id=[REGISTRY_POINT])


@dataclass(frozen=True)
class Registry:
    rows: list[StoredVersion]
    generation: int
    writer: str


Decide = Callable[[list[StoredVersion]], list[StoredVersion] | None]  # the new rows, or None: nothing to write


class RegistryPoint:
    def __init__(self, client: QdrantClient, collection: str) -> None:
        self._client = client
        self._collection = collection

    def read(self) -> Registry | None:
        """The registry, or None when the collection has no registry point yet (created before it existed)."""
        records = self._client.retrieve(
            self._collection,
            [REGISTRY_POINT],
            with_payload=True,
            with_vectors=False,
            consistency=models.ReadConsistencyType.MAJORITY,
        )
        if not records:
            return None
        payload: dict[str, Any] = records[0].payload or {}
        rows = [StoredVersion.from_json(r) for r in payload[VERSIONS]]
        return Registry(rows, int(payload[GENERATION]), str(payload.get(WRITER, "")))

    def seed(self, rows: list[StoredVersion]) -> None:
        """Create the registry point at generation 0 unless it exists: a registry another replica created
        (or changed since) is kept as it is."""
        point = models.PointStruct(id=REGISTRY_POINT, vector={}, payload=_payload(rows, 0, ""))
        self._client.upsert(
            self._collection,
            [point],
            update_mode=models.UpdateMode.INSERT_ONLY,
            wait=True,
            ordering=models.WriteOrdering.STRONG,
        )

    def change(self, decide: Decide) -> list[StoredVersion]:
        """Apply `decide` to the current rows by compare-and-set, deciding again from a fresh read whenever
        another writer got in first. Returns the rows in force; raises whatever `decide` raises."""
        for _ in range(CAS_ATTEMPTS):
            current = self.read()
            if current is None:
                raise StoreUnavailable(f"collection {self._collection!r} has no model registry (not opened)")
            rows = decide(current.rows)
            if rows is None:
                return current.rows
            token = uuid.uuid4().hex
            same_generation = models.Filter(
                must=[
                    models.HasIdCondition(has_id=[REGISTRY_POINT]),
                    models.FieldCondition(key=GENERATION, match=models.MatchValue(value=current.generation)),
                ]
            )
            self._client.set_payload(
                self._collection,
                _payload(rows, current.generation + 1, token),
                points=same_generation,
                wait=True,
                ordering=models.WriteOrdering.STRONG,
            )
            after = self.read()
            if after is not None and after.writer == token:
                return rows
        raise StoreUnavailable("the model registry kept changing under this replica; try again")


def _payload(rows: list[StoredVersion], generation: int, writer: str) -> dict[str, Any]:
    return {GENERATION: generation, WRITER: writer, VERSIONS: [v.to_json() for v in rows]}


def vector_names(config: models.CollectionConfig) -> set[str]:
    vectors = config.params.vectors
    return set(vectors) if isinstance(vectors, dict) else {""}


def metadata_versions(config: models.CollectionConfig) -> list[StoredVersion] | None:
    """The registry in the collection's metadata; a collection from before versions (unnamed vector,
    `lookalike.model_version`) reads as that one serving version on the unnamed vector."""
    metadata = config.metadata or {}
    rows = metadata.get(METADATA_VERSIONS)
    if rows is not None:
        return [StoredVersion.from_json(r) for r in rows]
    vectors = config.params.vectors
    legacy = metadata.get(MODEL_VERSION_KEY)
    if legacy is None or not isinstance(vectors, models.VectorParams):
        return None
    return [StoredVersion(str(legacy), "serving", vectors.size, "")]
