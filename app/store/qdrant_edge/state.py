"""The state every part of an EdgeStore shares: configuration, the shard list and its locks, the
maintenance bookkeeping, and the manifest counters.

EdgeStore is built in layers, one class per module, each adding methods on this state:
`_StoreState` (here) -> `_ShardAccess` (concurrency.py: how readers and writers touch shards) ->
`_JobRunner` (jobs.py: one build/merge job, the spare shard) -> `_Maintenance` (maintenance.py:
freezes and the two maintenance threads) -> `EdgeStore` (store.py: lifecycle and the VectorStore API).
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

from app.store.qdrant_edge.manifest import _shard_name, _write_manifest_file
from app.store.qdrant_edge.planning import MaintenanceHook, _Job
from app.store.qdrant_edge.shard import _Shard
from app.store.qdrant_edge.write_gate import _WriteGate


class _StoreState:
    """Constructor and shared fields of EdgeStore (see store.py)."""

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
    ) -> None:
        if hot_max < 1 or merge_fanin < 2:
            raise ValueError("hot_max must be >= 1 and merge_fanin >= 2")
        self.root = Path(path) / collection
        self.collection = collection
        self.hot_max = hot_max
        self.merge_fanin = merge_fanin
        # Loading a built shard holds the GIL (measured 10k: ~70 ms CPU / ~250 ms wall, 40k: ~100 / ~450 ms),
        # so merges stop here: a bounded, rare freeze. Every extra shard is a whole extra HNSW search
        # per query (~0.8-1.7 ms CPU at 768-d), so the default lets shards grow to 16 * hot_max; with
        # fanin 2 a collection of N points is searched in about popcount(N / hot_max) shards + hot.
        self.max_shard_points = max_shard_points if max_shard_points is not None else 16 * hot_max
        self.sync_wal = sync_wal
        self.builder_nice = builder_nice  # CPU niceness added by builder children (request threads win)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # reader counts, maintenance wake-ups, idleness
        self._gate = _WriteGate()
        self._shards: list[_Shard] = []  # rank descending: hot first
        self._spare: _Shard | None = None
        self._job: _Job | None = None
        self._open = False
        self._stopping = False
        self._dim = 0
        self._model_version = ""
        self._next_id = 1
        self._generation = 0
        self._lock_fd: int | None = None
        self._threads: list[threading.Thread] = []
        self._procs: set[subprocess.Popen[str]] = set()  # running edge_builder children
        self._failures = 0
        self._retry_at = 0.0
        self._counters = {"builds": 0, "merges": 0, "failed_jobs": 0, "freezes": 0}
        self._maintenance_hook: MaintenanceHook | None = None  # tests: observe/hold/kill a job

    def _new_name(self) -> str:
        name = _shard_name(self._next_id)
        self._next_id += 1
        return name

    def _write_manifest(self, shards: list[tuple[_Shard, dict[str, Any]]]) -> None:
        """Persist the shard list; `shards` pairs each shard with attribute overrides to record."""
        self._generation += 1
        _write_manifest_file(
            self.root,
            shards,
            dim=self._dim,
            model_version=self._model_version,
            generation=self._generation,
            next_id=self._next_id,
        )
