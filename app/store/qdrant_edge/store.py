"""EdgeStore: the embedded VectorStore (Qdrant Edge shards; design in __init__.py).

EdgeStore is a thin facade: it builds the state the parts share (StoreState) and the parts
(ShardSet, ShardWriter, JobRunner, MaintenanceScheduler), and implements the VectorStore API with them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_edge import Point, Query, QueryRequest, UpdateOperation

from app.core.errors import StoreUnavailable
from app.store.base import Hit, ItemPage, SimilarFilters, point_id
from app.store.qdrant_edge import browse
from app.store.qdrant_edge.collection import check_matches, open_collection
from app.store.qdrant_edge.files import DirLock
from app.store.qdrant_edge.filters import build_filter
from app.store.qdrant_edge.jobs import JobRunner
from app.store.qdrant_edge.maintenance import MaintenanceScheduler
from app.store.qdrant_edge.manifest import LOCK_FILE, Manifest
from app.store.qdrant_edge.planning import MaintenanceHook
from app.store.qdrant_edge.shard import Shard
from app.store.qdrant_edge.shard_set import ShardSet
from app.store.qdrant_edge.state import StoreConfig, StoreState, default_max_shard_points
from app.store.qdrant_edge.writes import ShardWriter

log = logging.getLogger("lookalike.store.edge")


class EdgeStore:
    """VectorStore on Qdrant Edge (embedded). See the package docstring (__init__.py) for the design."""

    def __init__(
        self,
        path: Path,
        collection: str,
        *,
        hot_max: int = 10_000,
        merge_fanin: int = 2,
        max_shard_points: int | None = None,
        sync_wal: bool = True,
        builder_nice: int = 10,
        close_wait_s: float = 30.0,
    ) -> None:
        root = Path(path) / collection
        config = StoreConfig(
            root=root,
            collection=collection,
            hot_max=hot_max,
            merge_fanin=merge_fanin,
            max_shard_points=max_shard_points if max_shard_points is not None else default_max_shard_points(hot_max),
            sync_wal=sync_wal,
            builder_nice=builder_nice,
            close_wait_s=close_wait_s,
        )
        self.root = root
        self.collection = collection
        self._state = StoreState(config=config, manifest=Manifest(root))
        self._shard_set = ShardSet(self._state)
        self._writer = ShardWriter(self._state)
        self._maintenance = MaintenanceScheduler(self._state, JobRunner(self._state, self._shard_set))
        self._dir_lock = DirLock(root, LOCK_FILE)

    @property
    def _maintenance_hook(self) -> MaintenanceHook | None:
        """Tests: called with (phase, job info) as a job goes through "copied", "spawned", "built"."""
        return self._state.maintenance_hook

    @_maintenance_hook.setter
    def _maintenance_hook(self, hook: MaintenanceHook | None) -> None:
        self._state.maintenance_hook = hook

    # ------------------------------------------------------------ lifecycle

    def ensure_collection(self, dim: int, model_version: str) -> None:
        state = self._state
        if state.open:
            check_matches(state.manifest, self.collection, dim, model_version)
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self._dir_lock.acquire()
        try:
            shards = open_collection(state.manifest, self.collection, dim, model_version)
        except BaseException:
            self._dir_lock.release()
            raise
        self._shard_set.install(shards)
        self._maintenance.start()

    def ready(self) -> bool:
        return self._state.open and not self._state.stopping

    def close(self) -> None:
        state = self._state
        with state.cond:
            if not state.open:
                return
        self._maintenance.stop()
        with state.gate.exclusive():
            self._shard_set.close_all(timeout_s=state.config.close_wait_s)
        self._dir_lock.release()

    def wait_for_maintenance(self, timeout_s: float) -> bool:
        """Block until no job runs or is due and no freeze is pending; False on timeout."""
        return self._maintenance.wait_idle(timeout_s)

    def stats(self) -> dict[str, Any]:
        state = self._state
        with self._shard_set.reading() as shards:
            rows = []
            for s in shards:
                info = s.edge.info()
                rows.append(
                    {
                        "name": s.name,
                        "role": s.role,
                        "rank": s.rank,
                        "points": info.points_count,
                        "indexed_vectors": info.indexed_vectors_count,
                        "segments": info.segments_count,
                    }
                )
            with state.cond:
                job = state.job.info() if state.job is not None else None
                return {
                    "shards": rows,
                    "job": job,
                    "job_running": job is not None,
                    "spare_ready": state.spare is not None,
                    **state.counters,
                }

    # ------------------------------------------------------------ VectorStore API

    def upsert(self, payloads: list[dict[str, Any]], vectors: np.ndarray) -> list[bool]:
        if not self.ready():
            raise StoreUnavailable("the embedded store is not open")
        dim = self._state.manifest.dim
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(payloads) or vectors.shape[1] != dim:
            raise ValueError(f"vectors must have shape ({len(payloads)}, {dim}), got {vectors.shape}")
        ids: list[str] = []
        for p in payloads:
            item_id = p.get("item_id")
            if not isinstance(item_id, str) or not item_id:
                raise ValueError("every payload needs a non-empty string item_id")
            ids.append(point_id(item_id))
        if not ids:
            return []
        last = {pid: i for i, pid in enumerate(ids)}  # a repeated item in one batch: the last one wins
        points = [Point(pid, vectors[i].tolist(), dict(payloads[i])) for pid, i in last.items()]
        unique = list(last)
        existed: set[str] = set()

        def plan(shards: list[Shard]) -> tuple[list[Shard], Callable[[], None]]:
            hot = shards[0]
            elsewhere: list[tuple[Shard, list[str]]] = []
            existed.clear()
            for s in shards:
                found = [str(r.id) for r in s.edge.retrieve(unique, False, False)]
                existed.update(found)
                if found and s is not hot:
                    elsewhere.append((s, found))

            def apply() -> None:
                self._writer.apply(hot, UpdateOperation.upsert_points(points), None)
                # Written first, removed from older shards second: a crash in between leaves a
                # duplicate that reads resolve by rank, never a lost item.
                for s, found in elsewhere:
                    self._writer.apply(s, UpdateOperation.delete_points(found), None)

            return [hot] + [s for s, _ in elsewhere], apply

        self._writer.mutate(plan)
        seen: set[str] = set()
        created = []
        for pid in ids:
            created.append(pid not in existed and pid not in seen)
            seen.add(pid)
        self._maintenance.maybe_freeze()
        return created

    def get(self, item_id: str) -> dict[str, Any] | None:
        pid = point_id(item_id)
        with self._shard_set.reading() as shards:
            for s in shards:
                records = s.edge.retrieve([pid], True, False)
                if records:
                    return dict(records[0].payload or {})
        return None

    def patch(self, item_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        fields = dict(fields)
        if fields.pop("item_id", item_id) != item_id:
            raise ValueError("item_id cannot be changed by a patch")
        pid = point_id(item_id)
        to_set = {k: v for k, v in fields.items() if v is not None}
        to_unset = [k for k, v in fields.items() if v is None]

        def plan(shards: list[Shard]) -> tuple[list[Shard], Callable[[], dict[str, Any] | None]]:
            holders = [s for s in shards if s.edge.retrieve([pid], False, False)]

            def apply() -> dict[str, Any] | None:
                # Re-checked under the shard locks: a concurrent delete may have won the race, and
                # set_payload on a missing point raises.
                holders[:] = [s for s in holders if s.edge.retrieve([pid], False, False)]
                for s in holders:
                    if to_set:
                        self._writer.apply(s, UpdateOperation.set_payload([pid], to_set), pid)
                    if to_unset:
                        self._writer.apply(s, UpdateOperation.delete_payload([pid], to_unset), pid)
                if not holders:
                    return None
                records = holders[0].edge.retrieve([pid], True, False)
                return dict(records[0].payload or {}) if records else None

            return holders, apply

        return self._writer.mutate(plan)

    def delete(self, item_id: str) -> bool:
        pid = point_id(item_id)

        def plan(shards: list[Shard]) -> tuple[list[Shard], Callable[[], bool]]:
            holders = [s for s in shards if s.edge.retrieve([pid], False, False)]

            def apply() -> bool:
                for s in holders:
                    self._writer.apply(s, UpdateOperation.delete_points([pid]), None)
                return bool(holders)

            return holders, apply

        return self._writer.mutate(plan)

    def similar(self, item_id: str, k: int, filters: SimilarFilters) -> list[Hit] | None:
        if k < 1:
            raise ValueError("k must be >= 1")
        pid = point_id(item_id)
        with self._shard_set.reading() as shards:
            item = None
            for s in shards:
                records = s.edge.retrieve([pid], True, True)
                if records:
                    item = records[0]
                    break
            if item is None:
                return None
            vector = item.vector
            if isinstance(vector, dict):  # named-vector form; the store uses the default vector
                vector = vector[""]
            request = QueryRequest(
                limit=k + 1,  # room for the query item itself, dropped below
                query=Query.Nearest(vector),
                filter=build_filter(item.payload or {}, filters),
                with_payload=False,  # payloads only for the winners: reading them costs ~0.8 ms per shard
                with_vector=False,
            )
            # point id -> (score, shard); shards come rank descending, so a duplicated item's newest copy wins
            found: dict[str, tuple[float, Shard]] = {}
            for s in shards:
                for p in s.edge.query(request):
                    found.setdefault(str(p.id), (p.score, s))
            found.pop(pid, None)
            if not found:
                return []
            # The k best scores, plus anything tied with the k-th (ties are broken by item_id below).
            cutoff = sorted((score for score, _ in found.values()), reverse=True)[:k][-1]
            by_shard: dict[int, tuple[Shard, list[str]]] = {}
            for point, (score, s) in found.items():
                if score >= cutoff:
                    by_shard.setdefault(id(s), (s, []))[1].append(point)
            hits = []  # an item deleted between the query and this read is left out, as if gone before
            for s, points in by_shard.values():
                for r in s.edge.retrieve(points, True, False):
                    payload = r.payload or {}
                    hits.append(Hit(str(payload.get("item_id", r.id)), found[str(r.id)][0], dict(payload)))
        return sorted(hits, key=lambda h: (-h.score, h.item_id))[:k]

    def similar_to_vector(self, vector: np.ndarray, k: int, filters: SimilarFilters) -> list[Hit]:
        with self._shard_set.reading() as shards:
            return browse.nearest(shards, vector, k, filters)

    def list_items(self, limit: int, cursor: str | None, category: str | None, status: str | None) -> ItemPage:
        with self._shard_set.reading() as shards:
            return browse.page(shards, limit, cursor, category, status)

    def count(self) -> int:
        with self._shard_set.reading() as shards:
            return sum(s.edge.info().points_count for s in shards)
