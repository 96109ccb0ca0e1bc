"""EdgeStore: the embedded VectorStore (Qdrant Edge shards; design in __init__.py).

EdgeStore is a thin facade: it builds the state the parts share (StoreState) and the parts
(ShardSet, ShardWriter, JobRunner, MaintenanceScheduler), and implements the VectorStore API with them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_edge import (
    CountRequest,
    Filter,
    HasVectorCondition,
    Point,
    PointVectors,
    UpdateOperation,
)

from app.core.errors import StoreUnavailable
from app.store import photos
from app.store.base import Hit, ItemPage, ModelVersion, PhotoVectors, SimilarFilters, payload_point_id, point_id
from app.store.qdrant_edge import browse
from app.store.qdrant_edge.builder import IndexOptions, create_vector
from app.store.qdrant_edge.bulk import BulkLoader, BulkReport, BulkRow
from app.store.qdrant_edge.collection import open_collection
from app.store.qdrant_edge.files import DirLock, read_json, write_json_atomic
from app.store.qdrant_edge.jobs import JobRunner, builder_env
from app.store.qdrant_edge.maintenance import MaintenanceScheduler
from app.store.qdrant_edge.manifest import LOCK_FILE, META_FILE, Manifest
from app.store.qdrant_edge.planning import MaintenanceHook
from app.store.qdrant_edge.readers import ReaderPool
from app.store.qdrant_edge.shard import Shard
from app.store.qdrant_edge.shard_set import ShardSet
from app.store.qdrant_edge.state import StoreConfig, StoreState, default_max_shard_points
from app.store.qdrant_edge.writes import ShardWriter
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
        index: IndexOptions | None = None,
        bulk_shard_points: int = 1_000_000,
        read_workers: int = 0,
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
            index=index or IndexOptions(),
            bulk_shard_points=bulk_shard_points,
            read_workers=read_workers,
        )
        self.root = root
        self.collection = collection
        self._state = StoreState(config=config, manifest=Manifest(root))
        self._readers = self._state.readers = ReaderPool(root, read_workers, builder_env(), config.index)
        self._shard_set = ShardSet(self._state)
        self._writer = ShardWriter(self._state)
        self._maintenance = MaintenanceScheduler(self._state, JobRunner(self._state, self._shard_set))
        self._dir_lock = DirLock(root, LOCK_FILE)
        self._meta_lock = threading.Lock()
        self._searching = browse.Searching(config.index.search_params(), self._readers)

    @property
    def _maintenance_hook(self) -> MaintenanceHook | None:
        """Tests: called with (phase, job info) as a job goes through "copied", "spawned", "built"."""
        return self._state.maintenance_hook

    @_maintenance_hook.setter
    def _maintenance_hook(self, hook: MaintenanceHook | None) -> None:
        self._state.maintenance_hook = hook

    # ------------------------------------------------------------ lifecycle

    def open(self, models: Mapping[str, int]) -> list[ModelVersion]:
        """See VectorStore.open. On an open store, versions not known yet are added (a new candidate)."""
        state = self._state
        if state.open:
            with state.gate.exclusive():
                rows, added = open_versions(state.manifest.versions, models, f"{self.collection!r} at {self.root}")
                if added:
                    self._change_versions(rows, [(v.vector, v.dim) for v in added], [])
            return self.versions()
        self.root.mkdir(parents=True, exist_ok=True)
        self._dir_lock.acquire()
        try:
            shards = open_collection(state.manifest, self.collection, models)
        except BaseException:
            self._dir_lock.release()
            raise
        self._readers.start([s for s in shards if s.role == "sealed"])
        self._shard_set.install(shards)
        self._maintenance.start()
        return self.versions()

    def versions(self) -> list[ModelVersion]:
        return [v.public() for v in self._state.manifest.versions]

    def promote(self, version: str) -> None:
        with self._state.gate.exclusive():
            self._change_versions(promoted(self._state.manifest.versions, version), [], [])

    def retire(self, version: str) -> None:
        with self._state.gate.exclusive():
            rows, target = retired(self._state.manifest.versions, version)
            self._change_versions(rows, [], [(target.vector, target.dim)])

    def _change_versions(
        self, rows: list[StoredVersion], create: list[tuple[str, int]], drop: list[tuple[str, int]]
    ) -> None:
        """Persist a new registry and give every shard its vectors, under the exclusive gate: new vectors before the
        manifest names them, retired ones after (open repairs a crash between); shard locks: a job may copy one."""
        state = self._state
        if not self.ready():
            raise StoreUnavailable("the embedded store is not open")
        shards = list(state.shards)

        def change(ops: list[tuple[UpdateOperation, tuple[str, int]]]) -> None:
            for s in shards:
                with s.lock:
                    for op, vector in ops:
                        self._writer.apply(s, op, None, vector)
                    s.wal.sync()

        change([(create_vector(n, d), (n, d)) for n, d in create])
        state.manifest.versions = rows
        state.manifest.write([s.record() for s in shards])
        change([(UpdateOperation.delete_vector_name(n), (n, d)) for n, d in drop])

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
        self._readers.close()
        self._dir_lock.release()

    def wait_for_maintenance(self, timeout_s: float) -> bool:
        """Block until no job runs or is due and no freeze is pending; False on timeout."""
        return self._maintenance.wait_idle(timeout_s)

    def stats(self) -> dict[str, Any]:
        state = self._state
        with self._shard_set.reading() as shards:
            rows = [s.stats() for s in shards]
            with state.cond:
                job = state.job.info() if state.job is not None else None
                return {
                    "shards": rows,
                    "job": job,
                    "job_running": job is not None,
                    "spare_ready": state.spare is not None,
                    **state.counters,
                }

    def bulk_load(
        self,
        rows: Iterable[BulkRow],
        *,
        shard_points: int | None = None,
        progress: Callable[[int], None] | None = None,
        committed: Callable[[int], None] | None = None,
    ) -> BulkReport:
        """Load many items, each vector indexed once (rows: payload, {version: photo vectors}); see bulk.py."""
        loader = BulkLoader(self._state, self._maintenance.runner, self._writer, self._maintenance.wake)
        return loader.load(rows, shard_points, progress, committed)

    # ------------------------------------------------------------ VectorStore API

    def upsert(self, payloads: list[dict[str, Any]], vectors: Mapping[str, PhotoVectors] | PhotoVectors) -> list[bool]:
        """See VectorStore.upsert (a plain array while exactly one version is active)."""
        if not self.ready():
            raise StoreUnavailable("the embedded store is not open")
        vectors_by_name(self._state.manifest.versions, len(payloads), vectors)  # fail before anything else
        ids = [payload_point_id(p) for p in payloads]
        if not ids:
            return []
        last = {pid: i for i, pid in enumerate(ids)}  # a repeated item in one batch: the last one wins
        unique = list(last)
        existed: set[str] = set()

        def plan(shards: list[Shard]) -> tuple[list[Shard], Callable[[], None]]:
            # Under the shared gate the versions cannot change: checked again against the ones in force.
            by_name = vectors_by_name(self._state.manifest.versions, len(payloads), vectors)
            points = [
                Point(pid, {name: point_vector(name, a[i]) for name, a in by_name.items()}, dict(payloads[i]))
                for pid, i in last.items()
            ]
            hot = shards[0]
            elsewhere: list[tuple[Shard, list[str]]] = []
            existed.clear()
            for s in shards:
                found = [str(r.id) for r in s.edge.retrieve(unique, False, False)]
                existed.update(found)
                if found and s is not hot:
                    elsewhere.append((s, found))

            def apply() -> None:
                self._writer.apply(hot, UpdateOperation.upsert_points(points), None, points=last)
                # Written first, removed from older shards second: a crash in between leaves a
                # duplicate that reads resolve by rank, never a lost item.
                for s, found in elsewhere:
                    self._writer.apply(s, UpdateOperation.delete_points(found), None, points=found)

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
        return self.get_many([item_id])[0]

    def get_many(self, item_ids: list[str]) -> list[dict[str, Any] | None]:
        pids = [point_id(item_id) for item_id in item_ids]
        found: dict[str, dict[str, Any]] = {}
        with self._shard_set.reading() as shards:
            for s in shards:  # newest first: an item a crash left in two shards reads as its newest copy
                wanted = [pid for pid in dict.fromkeys(pids) if pid not in found]
                if not wanted:
                    break
                for r in s.edge.retrieve(wanted, True, False):
                    found[str(r.id)] = r.payload or {}
        return [dict(found[pid]) if pid in found else None for pid in pids]

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
                        self._writer.apply(s, UpdateOperation.set_payload([pid], to_set), pid, points=[pid])
                    if to_unset:
                        self._writer.apply(s, UpdateOperation.delete_payload([pid], to_unset), pid, points=[pid])
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
                    self._writer.apply(s, UpdateOperation.delete_points([pid]), None, points=[pid])
                return bool(holders)

            return holders, apply

        return self._writer.mutate(plan)

    def similar(self, item_id: str, k: int, filters: SimilarFilters, version: str | None = None) -> list[Hit] | None:
        v = find(self._state.manifest.versions, version)
        with self._retire_raced(version), self._shard_set.reading() as shards:
            return browse.similar_listings(shards, item_id, v, k, filters, self._searching)

    def similar_to_vector(
        self, vector: np.ndarray, k: int, filters: SimilarFilters, version: str | None = None
    ) -> list[Hit]:
        v = find(self._state.manifest.versions, version)
        with self._retire_raced(version), self._shard_set.reading() as shards:
            return browse.similar_to_photo(shards, vector, v, k, filters, self._searching)

    def photo_copies(
        self, vector: np.ndarray, min_cosine: float, limit: int, leave_out: str, version: str | None = None
    ) -> dict[str, list[int]]:
        v = find(self._state.manifest.versions, version)
        with self._retire_raced(version), self._shard_set.reading() as shards:
            pid = point_id(leave_out)
            found = browse.candidates(shards, [vector], limit, None, v.vector, pid, self._searching)
        return photos.copies(vector, min_cosine, found)

    def _retire_raced(self, version: str | None) -> contextlib.AbstractContextManager[None]:
        # retire() names the version retired in the manifest before it deletes the vector from the shards
        return retire_raced(lambda: find(self._state.manifest.versions, version))

    def coverage(self, version: str) -> tuple[int, int]:
        v = find(self._state.manifest.versions, version)
        has = CountRequest(exact=True, filter=Filter(must=[HasVectorCondition(v.vector)]))
        with self._shard_set.reading() as shards:
            having = sum(s.edge.count(has) for s in shards)
            total = sum(s.edge.info().points_count for s in shards)
        return having, total

    def missing(self, version: str, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        v = find(self._state.manifest.versions, version)
        with self._shard_set.reading() as shards:
            page = browse.lacking(shards, v.vector, limit, cursor)
        return page.items, page.next_point

    def set_vector(self, item_id: str, version: str, vector: np.ndarray, write_id: str | None) -> bool:
        pid = point_id(item_id)

        def plan(shards: list[Shard]) -> tuple[list[Shard], Callable[[], bool]]:
            v = find(self._state.manifest.versions, version)  # stable under the shared gate
            stored = stored_vector(v, vector)
            holder = next((s for s in shards if s.edge.retrieve([pid], False, False)), None)  # the newest copy

            def apply() -> bool:
                # Read, compare, write under the shard's lock: exact, every write of this point takes it.
                records = holder.edge.retrieve([pid], True, False) if holder is not None else []
                if not records or (records[0].payload or {}).get("write_id") != write_id:
                    return False
                op = UpdateOperation.update_vectors([PointVectors(pid, {v.vector: stored})])
                self._writer.apply(holder, op, pid, points=[pid])
                if holder.role == "sealed":
                    holder.rewritten += 1  # the point left the indexed segments: see planning.RESEAL_FRACTION
                    self._maintenance.wake()
                return True

            return ([holder] if holder is not None else []), apply

        return self._writer.mutate(plan)

    def get_meta(self, key: str) -> dict[str, Any] | None:
        with self._meta_lock:
            value = read_json(self.root / META_FILE).get(key)
        return dict(value) if isinstance(value, dict) else None

    def put_meta(self, key: str, value: dict[str, Any]) -> None:
        with self._meta_lock:
            write_json_atomic(self.root / META_FILE, {**read_json(self.root / META_FILE), key: value})  # fsynced

    def list_items(self, limit: int, cursor: str | None, category: str | None, status: str | None) -> ItemPage:
        with self._shard_set.reading() as shards:
            return browse.page(shards, limit, cursor, category, status)

    def count(self) -> int:
        with self._shard_set.reading() as shards:
            return sum(s.edge.info().points_count for s in shards)
