"""EdgeStore: the embedded VectorStore (Qdrant Edge shards; design in __init__.py).

This module holds the public methods (lifecycle and the VectorStore API) and opening a collection;
the layers it inherits hold the rest (see state.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from qdrant_edge import EdgeShard, Point, Query, QueryRequest, UpdateOperation

from app.store.base import (
    CollectionMismatch,
    Hit,
    ItemPage,
    SimilarFilters,
    StoreUnavailableError,
    point_id,
)
from app.store.qdrant_edge import browse
from app.store.qdrant_edge.builder import create_plain_shard
from app.store.qdrant_edge.files import _lock_dir, _unlock_dir, _write_back
from app.store.qdrant_edge.filters import _build_filter
from app.store.qdrant_edge.maintenance import _Maintenance
from app.store.qdrant_edge.manifest import FORMAT_VERSION, LOCK_FILE, MANIFEST, _collect_garbage, _read_manifest
from app.store.qdrant_edge.shard import _Shard

log = logging.getLogger("lookalike.store.edge")


class EdgeStore(_Maintenance):
    """VectorStore on Qdrant Edge (embedded). See the package docstring (__init__.py) for the design.

    EdgeStore(path, collection, *, hot_max=10_000, merge_fanin=2, max_shard_points=None,
    sync_wal=True, builder_nice=10): the constructor and the shared fields are in state.py.
    """

    # ------------------------------------------------------------ lifecycle

    def ensure_collection(self, dim: int, model_version: str) -> None:
        if self._open:
            self._check_matches(dim, model_version)
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self._acquire_dir_lock()
        try:
            manifest = _read_manifest(self.root)
            if manifest is not None:
                self._dim, self._model_version = int(manifest["dim"]), str(manifest["model_version"])
                self._check_matches(dim, model_version)
                self._open_existing(manifest)
            else:
                self._dim, self._model_version = dim, model_version
                self._create_new()
        except BaseException:
            self._release_dir_lock()
            raise
        self._open = True
        self._stopping = False
        # Two threads: one keeps an empty spare shard ready (so a freeze never waits behind a long
        # merge), one runs build/merge jobs. Both mostly wait on subprocesses.
        self._threads = [
            threading.Thread(target=self._keep_spare, name=f"edge-spare-{self.collection}", daemon=True),
            threading.Thread(target=self._run_jobs, name=f"edge-jobs-{self.collection}", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def ready(self) -> bool:
        return self._open and not self._stopping

    def close(self) -> None:
        with self._cond:
            if not self._open:
                return
            self._stopping = True
            procs = list(self._procs)
            self._cond.notify_all()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for t in self._threads:
            t.join()
        self._threads = []
        with self._gate.exclusive():
            with self._cond:
                self._open = False
                shards = list(self._shards)
                if self._spare is not None:
                    shards.append(self._spare)
                self._wait_readers_locked(shards, timeout_s=30.0)
                self._shards, self._spare = [], None
            _write_back()
            for s in shards:
                s.edge.flush()
                s.close()
        self._release_dir_lock()

    def wait_for_maintenance(self, timeout_s: float) -> bool:
        """Block until no job runs or is due and no freeze is pending; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._open and (self._job is not None or self._busy_locked()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.5))
            return True

    def stats(self) -> dict[str, Any]:
        with self._reading() as shards:
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
            with self._lock:
                job = self._job.info() if self._job is not None else None
                return {
                    "shards": rows,
                    "job": job,
                    "job_running": job is not None,
                    "spare_ready": self._spare is not None,
                    **self._counters,
                }

    # ------------------------------------------------------------ VectorStore API

    def upsert(self, payloads: list[dict[str, Any]], vectors: np.ndarray) -> list[bool]:
        if not self.ready():
            raise StoreUnavailableError("the embedded store is not open")
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(payloads) or vectors.shape[1] != self._dim:
            raise ValueError(f"vectors must have shape ({len(payloads)}, {self._dim}), got {vectors.shape}")
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

        def plan(shards: list[_Shard]) -> tuple[list[_Shard], Callable[[], None]]:
            hot = shards[0]
            elsewhere: list[tuple[_Shard, list[str]]] = []
            existed.clear()
            for s in shards:
                found = [str(r.id) for r in s.edge.retrieve(unique, False, False)]
                existed.update(found)
                if found and s is not hot:
                    elsewhere.append((s, found))

            def apply() -> None:
                self._apply(hot, UpdateOperation.upsert_points(points), None)
                # Written first, removed from older shards second: a crash in between leaves a
                # duplicate that reads resolve by rank, never a lost item.
                for s, found in elsewhere:
                    self._apply(s, UpdateOperation.delete_points(found), None)

            return [hot] + [s for s, _ in elsewhere], apply

        self._mutate(plan)
        seen: set[str] = set()
        created = []
        for pid in ids:
            created.append(pid not in existed and pid not in seen)
            seen.add(pid)
        self._maybe_freeze()
        return created

    def get(self, item_id: str) -> dict[str, Any] | None:
        pid = point_id(item_id)
        with self._reading() as shards:
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

        def plan(shards: list[_Shard]) -> tuple[list[_Shard], Callable[[], dict[str, Any] | None]]:
            holders = [s for s in shards if s.edge.retrieve([pid], False, False)]

            def apply() -> dict[str, Any] | None:
                # Re-checked under the shard locks: a concurrent delete may have won the race, and
                # set_payload on a missing point raises.
                holders[:] = [s for s in holders if s.edge.retrieve([pid], False, False)]
                for s in holders:
                    if to_set:
                        self._apply(s, UpdateOperation.set_payload([pid], to_set), pid)
                    if to_unset:
                        self._apply(s, UpdateOperation.delete_payload([pid], to_unset), pid)
                if not holders:
                    return None
                records = holders[0].edge.retrieve([pid], True, False)
                return dict(records[0].payload or {}) if records else None

            return holders, apply

        return self._mutate(plan)

    def delete(self, item_id: str) -> bool:
        pid = point_id(item_id)

        def plan(shards: list[_Shard]) -> tuple[list[_Shard], Callable[[], bool]]:
            holders = [s for s in shards if s.edge.retrieve([pid], False, False)]

            def apply() -> bool:
                for s in holders:
                    self._apply(s, UpdateOperation.delete_points([pid]), None)
                return bool(holders)

            return holders, apply

        return self._mutate(plan)

    def similar(self, item_id: str, k: int, filters: SimilarFilters) -> list[Hit] | None:
        if k < 1:
            raise ValueError("k must be >= 1")
        pid = point_id(item_id)
        with self._reading() as shards:
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
                filter=_build_filter(item.payload or {}, filters),
                with_payload=False,  # payloads only for the winners: reading them costs ~0.8 ms per shard
                with_vector=False,
            )
            # point id -> (score, shard); shards come rank descending, so a duplicated item's newest copy wins
            found: dict[str, tuple[float, _Shard]] = {}
            for s in shards:
                for p in s.edge.query(request):
                    found.setdefault(str(p.id), (p.score, s))
            found.pop(pid, None)
            if not found:
                return []
            # The k best scores, plus anything tied with the k-th (ties are broken by item_id below).
            cutoff = sorted((score for score, _ in found.values()), reverse=True)[:k][-1]
            by_shard: dict[int, tuple[_Shard, list[str]]] = {}
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
        with self._reading() as shards:
            return browse.nearest(shards, vector, k, filters)

    def list_items(self, limit: int, cursor: str | None, category: str | None, status: str | None) -> ItemPage:
        with self._reading() as shards:
            return browse.page(shards, limit, cursor, category, status)

    def count(self) -> int:
        with self._reading() as shards:
            return sum(s.edge.info().points_count for s in shards)

    # ------------------------------------------------------------ open / create

    def _check_matches(self, dim: int, model_version: str) -> None:
        if dim == self._dim and model_version == self._model_version:
            return
        raise CollectionMismatch(
            f"collection {self.collection!r} at {self.root} was built with model {self._model_version!r} "
            f"({self._dim}-d vectors), but the loaded model is {model_version!r} ({dim}-d). Point "
            f"LOOKALIKE_MODEL_PATH at the model the collection was built with, or set another "
            f"LOOKALIKE_COLLECTION (or delete {self.root}) and re-index the items with this model."
        )

    def _acquire_dir_lock(self) -> None:
        self._lock_fd = _lock_dir(self.root, LOCK_FILE)

    def _release_dir_lock(self) -> None:
        if self._lock_fd is not None:
            _unlock_dir(self._lock_fd)
            self._lock_fd = None

    def _create_new(self) -> None:
        _collect_garbage(self.root, keep=set())
        name = self._new_name()
        edge = create_plain_shard(self.root / name, self._dim)  # start-up: a GIL hold is harmless here
        hot = _Shard(name=name, path=self.root / name, edge=edge, role="hot", rank=self._next_id)
        self._next_id += 1
        self._write_manifest([(hot, {})])
        self._shards = [hot]
        log.info("created embedded collection %s (dim %d, model %s)", self.root, self._dim, self._model_version)

    def _open_existing(self, manifest: dict[str, Any]) -> None:
        if manifest.get("format") != FORMAT_VERSION:
            raise RuntimeError(f"{self.root / MANIFEST}: unsupported format {manifest.get('format')!r}")
        entries = manifest["shards"]
        _collect_garbage(self.root, keep={e["name"] for e in entries})
        self._next_id = int(manifest["next_id"])
        self._generation = int(manifest["generation"])
        shards = []
        for e in entries:
            path = self.root / e["name"]
            if not path.is_dir():
                raise RuntimeError(f"{self.root / MANIFEST} names {e['name']} but the directory is missing")
            edge = EdgeShard.load(str(path))
            shards.append(
                _Shard(name=e["name"], path=path, edge=edge, role=e["role"], rank=int(e["rank"]), points=e["points"])
            )
        shards.sort(key=lambda s: s.rank, reverse=True)
        if not shards or shards[0].role != "hot":
            raise RuntimeError(f"{self.root / MANIFEST}: the newest shard must be the hot shard")
        self._shards = shards
        log.info("opened embedded collection %s: %s", self.root, [(s.name, s.role) for s in shards])
