"""One open shard of the embedded store (`_Shard`), and the timing of engine calls that hold the GIL."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from qdrant_edge import EdgeShard

from app.store.qdrant_edge.files import _WalSyncer

log = logging.getLogger("lookalike.store.edge")

# An engine call made by maintenance that holds the GIL longer than this is logged as a warning:
# every request thread of the process stood still for that long.
SLOW_GIL_HOLD_MS = 50.0


@contextlib.contextmanager
def _gil_hold(what: str) -> Iterator[None]:
    # Wall time is what request threads feel; this thread's CPU time is the call's own work (the
    # rest is waiting for a CPU or the disk, which a busy machine stretches).
    t, cpu = time.perf_counter(), time.thread_time()
    yield
    ms, cpu_ms = (time.perf_counter() - t) * 1e3, (time.thread_time() - cpu) * 1e3
    (log.warning if ms > SLOW_GIL_HOLD_MS else log.debug)("%s held the GIL for %.0f ms (%.0f ms CPU)", what, ms, cpu_ms)


@dataclass(eq=False)
class _Shard:
    name: str
    path: Path
    edge: EdgeShard
    role: str  # "hot" | "frozen" | "sealed" | "spare"
    rank: int
    points: int = 0  # recorded when the shard was frozen or built (size tiers)
    lock: threading.Lock = field(default_factory=threading.Lock)  # mutations and job copies
    readers: int = 0  # guarded by EdgeStore._lock
    retired: bool = False
    wal: _WalSyncer = field(init=False)

    def __post_init__(self) -> None:
        self.wal = _WalSyncer(self.path)

    def close(self) -> None:
        self.wal.close()
        self.edge.close()
