"""How readers and writers of the embedded store touch shards (see "Concurrency" in __init__.py).

Readers copy the shard list and bump reference counts under `_lock`, then query outside any lock; a
retired shard is closed once its readers are gone. Writers hold the write gate in shared mode plus the
lock of each shard they touch, and record their ops for a job that is copying that shard.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from qdrant_edge import UpdateOperation

from app.core.errors import StoreUnavailable
from app.store.qdrant_edge.shard import _Shard
from app.store.qdrant_edge.state import _StoreState

log = logging.getLogger("lookalike.store.edge")

T = TypeVar("T")


class _ShardAccess(_StoreState):
    """Reference-counted shard snapshots for readers, the gated write protocol for writers."""

    # ------------------------------------------------------------ read path

    @contextlib.contextmanager
    def _reading(self) -> Iterator[list[_Shard]]:
        with self._lock:
            if not self._open:
                raise StoreUnavailable("the embedded store is closed")
            shards = list(self._shards)
            for s in shards:
                s.readers += 1
        try:
            yield shards
        finally:
            with self._cond:
                for s in shards:
                    s.readers -= 1
                if any(s.retired for s in shards):
                    self._cond.notify_all()

    def _wait_readers_locked(self, shards: list[_Shard], timeout_s: float | None = None) -> None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while any(s.readers for s in shards):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                log.warning("closing shards with readers still active")
                return
            self._cond.wait(remaining)

    # ------------------------------------------------------------ write path

    def _mutate(self, plan: Callable[[list[_Shard]], tuple[list[_Shard], Callable[[], T]]]) -> T:
        """Run one write: plan on a stable shard set, lock the shards it touches, apply, fsync WAL."""
        while True:
            blocked: _Shard | None = None
            with self._gate.shared():
                if not self._open or self._stopping:
                    raise StoreUnavailable("the embedded store is closed")
                targets, apply = plan(list(self._shards))
                held: list[_Shard] = []
                try:
                    for s in sorted(set(targets), key=lambda s: s.name):
                        # Short wait: other writers hold a shard lock for milliseconds, a job copying
                        # the shard holds it for seconds; for that one we leave the gate (below).
                        if not s.lock.acquire(timeout=0.05):
                            blocked = s
                            break
                        held.append(s)
                    if blocked is None:
                        result = apply()
                        if self.sync_wal:
                            for s in held:
                                s.wal.sync()
                        return result
                finally:
                    for s in held:
                        s.lock.release()
            with blocked.lock:  # wait for the job's copy of this shard to end, then re-plan
                pass

    def _apply(self, shard: _Shard, op: UpdateOperation, needs_point: str | None) -> None:
        """Apply one op to a shard (caller holds its lock) and record it for a job copying it."""
        shard.edge.update(op)
        job = self._job
        if job is not None and job.recording and shard in job.sources:
            job.ops.append((needs_point, op))
