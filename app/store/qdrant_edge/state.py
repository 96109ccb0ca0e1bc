"""The one state object the parts of an EdgeStore share: configuration, the shard list, the write
gate, the manifest and the maintenance bookkeeping.

Every part (ShardSet, ShardWriter, JobRunner, MaintenanceScheduler, EdgeStore) gets this object;
none keeps a copy of what is here. Fields marked "cond" are read and written holding `cond`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from app.store.qdrant_edge.builder import IndexOptions
from app.store.qdrant_edge.manifest import Manifest
from app.store.qdrant_edge.planning import Job, MaintenanceHook
from app.store.qdrant_edge.readers import ReaderPool
from app.store.qdrant_edge.shard import Shard
from app.store.qdrant_edge.write_gate import WriteGate


def default_max_shard_points(hot_max: int) -> int:
    # Loading a built shard holds the GIL, longer the larger the shard (BENCHMARKS.md, "Index maintenance"),
    # so merges stop at max_shard_points: a bounded, rare freeze. Every extra shard is a whole extra
    # HNSW search per query (BENCHMARKS.md, "Read path"), so the default lets shards grow to 16 * hot_max;
    # with fanin 2 a collection of N points is searched in about popcount(N / hot_max) shards + hot.
    return 16 * hot_max


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    root: Path  # the collection directory: QDRANT_PATH/<collection>
    collection: str
    hot_max: int = 10_000
    merge_fanin: int = 2
    max_shard_points: int  # no merge makes a bigger shard (see default_max_shard_points)
    sync_wal: bool = True
    builder_nice: int = 10  # CPU niceness added by builder children (request threads win)
    close_wait_s: float = 30.0  # close(): how long to wait for readers still querying a shard
    index: IndexOptions = field(default_factory=IndexOptions)  # how sealed shards store vectors and are searched
    bulk_shard_points: int = 1_000_000  # points per shard a bulk load builds (one HNSW graph each)
    read_workers: int = 0  # reader processes searching sealed shards (readers.py); 0: in-process

    def __post_init__(self) -> None:
        if self.hot_max < 1 or self.merge_fanin < 2:
            raise ValueError("hot_max must be >= 1 and merge_fanin >= 2")


def new_counters() -> dict[str, int]:
    # points_built: points passed into an HNSW build (jobs and bulk loads) since the store was opened
    return {"builds": 0, "merges": 0, "reseals": 0, "failed_jobs": 0, "freezes": 0, "points_built": 0}


@dataclass(eq=False)
class StoreState:
    config: StoreConfig
    manifest: Manifest
    gate: WriteGate = field(default_factory=WriteGate)
    # One lock for the fields below: reader counts, the shard list, maintenance wake-ups, idleness.
    cond: threading.Condition = field(default_factory=lambda: threading.Condition(threading.Lock()))
    shards: list[Shard] = field(default_factory=list)  # cond; rank descending: hot first
    spare: Shard | None = None  # cond; the next hot shard, made ahead of time
    job: Job | None = None  # cond; the running build/merge job
    open: bool = False  # cond
    stopping: bool = False  # cond
    counters: dict[str, int] = field(default_factory=new_counters)
    maintenance_hook: MaintenanceHook | None = None  # tests: observe/hold/kill a job
    readers: ReaderPool | None = None  # set by EdgeStore; searches of sealed shards in reader processes
