"""One open shard of the embedded store (`Shard`), and the timing of engine calls that hold the GIL."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdrant_edge import EdgeShard, UpdateOperation

from app.store.qdrant_edge.builder import create_vector, vector_names
from app.store.qdrant_edge.files import WalSyncer
from app.store.qdrant_edge.manifest import ShardRecord

log = logging.getLogger("lookalike.store.edge")

# An engine call made by maintenance that holds the GIL longer than this is logged as a warning:
# every request thread of the process stood still for that long.
SLOW_GIL_HOLD_MS = 50.0


@contextlib.contextmanager
def gil_hold(what: str) -> Iterator[None]:
    """Log how long an engine call that holds the GIL took (a warning above SLOW_GIL_HOLD_MS)."""
    # Wall time is what request threads feel; this thread's CPU time is the call's own work (the
    # rest is waiting for a CPU or the disk, which a busy machine stretches).
    t, cpu = time.perf_counter(), time.thread_time()
    yield
    ms, cpu_ms = (time.perf_counter() - t) * 1e3, (time.thread_time() - cpu) * 1e3
    (log.warning if ms > SLOW_GIL_HOLD_MS else log.debug)("%s held the GIL for %.0f ms (%.0f ms CPU)", what, ms, cpu_ms)


@dataclass(eq=False)
class Shard:
    name: str
    path: Path
    edge: EdgeShard
    role: str  # "hot" | "frozen" | "sealed" | "spare"
    rank: int
    points: int = 0  # recorded when the shard was frozen or built (size tiers)
    lock: threading.Lock = field(default_factory=threading.Lock)  # mutations and job copies
    readers: int = 0  # guarded by StoreState.cond (see ShardSet)
    retired: bool = False
    rewritten: int = 0  # points given a vector in place since this process opened it (reseal planning)
    # sealed: points written since its reader view was made (readers.py); searched in-process, not in the view
    touched: set[str] = field(default_factory=set)
    # Known to hold no point (a spare, or empty at open), so searches skip it; cleared before any upsert.
    empty: bool = False
    wal: WalSyncer = field(init=False)

    def __post_init__(self) -> None:
        self.wal = WalSyncer(self.path)

    @classmethod
    def load(cls, root: Path, record: ShardRecord) -> Shard:
        """Open the shard a manifest row names (holds the GIL: start-up only)."""
        path = root / record.name
        if not path.is_dir():
            raise RuntimeError(f"the manifest of {root} names {record.name} but the directory is missing")
        edge = EdgeShard.load(str(path))
        shard = cls(name=record.name, path=path, edge=edge, role=record.role, rank=record.rank, points=record.points)
        shard.empty = edge.info().points_count == 0
        return shard

    def record(self) -> ShardRecord:
        """This shard as a manifest row."""
        return ShardRecord(name=self.name, role=self.role, rank=self.rank, points=self.points)

    def stats(self) -> dict[str, Any]:
        """This shard as EdgeStore.stats() lists it."""
        info = self.edge.info()
        return {
            "name": self.name,
            "role": self.role,
            "rank": self.rank,
            "points": info.points_count,
            "indexed_vectors": info.indexed_vectors_count,
            "segments": info.segments_count,
        }

    def vectors(self) -> dict[str, int]:
        """{named vector: dim} this shard has."""
        return vector_names(self.path)

    def vector_changes(self, wanted: dict[str, int]) -> list[UpdateOperation]:
        """The ops that give this shard exactly the named vectors `wanted` ({name: dim})."""
        have = self.vectors()
        ops = [create_vector(n, d) for n, d in wanted.items() if n not in have]
        ops += [UpdateOperation.delete_vector_name(n) for n in have if n not in wanted]
        return ops

    def close(self) -> None:
        self.wal.close()
        self.edge.close()
