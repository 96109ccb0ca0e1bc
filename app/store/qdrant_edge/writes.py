"""The write protocol of the embedded store (see "Concurrency" in __init__.py).

A write holds the write gate in shared mode (so the shard set cannot change under it) plus the lock
of each shard it touches, and records its ops for a job that is copying one of those shards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from qdrant_edge import UpdateOperation

from app.core.errors import StoreUnavailable
from app.store.qdrant_edge.shard import Shard
from app.store.qdrant_edge.state import StoreState

T = TypeVar("T")

# A write plans on a stable shard list: it names the shards it touches and returns what applies it.
WritePlan = Callable[[list[Shard]], tuple[list[Shard], Callable[[], T]]]


class ShardWriter:
    """Runs writes against the shard list in `state`."""

    def __init__(self, state: StoreState) -> None:
        self.state = state

    def mutate(self, plan: WritePlan[T]) -> T:
        """Run one write: plan on a stable shard set, lock the shards it touches, apply, fsync WAL."""
        state = self.state
        while True:
            blocked: Shard | None = None
            with state.gate.shared():
                if not state.open or state.stopping:
                    raise StoreUnavailable("the embedded store is closed")
                targets, apply = plan(list(state.shards))
                held: list[Shard] = []
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
                        if state.config.sync_wal:
                            for s in held:
                                s.wal.sync()
                        return result
                finally:
                    for s in held:
                        s.lock.release()
            with blocked.lock:  # wait for the job's copy of this shard to end, then re-plan
                pass

    def apply(
        self,
        shard: Shard,
        op: UpdateOperation,
        needs_point: str | None,
        vector: tuple[str, int] | None = None,
        points: Iterable[str] = (),
    ) -> None:
        """Apply one op to a shard (caller holds its lock or the exclusive gate) and record it for a job
        copying it.

        `needs_point`: the point the op needs to exist (a patch), so that its replay skips it if the
        point is gone from the job's result. `vector`: the named vector (name, dim) the op creates or
        deletes (a model version added or retired), so that its replay is idempotent. `points`: the
        point ids the op changes; a sealed shard's reader view no longer answers for them (readers.py).
        """
        points = list(points)
        if points:  # before the write: a search never skips a shard that may hold them
            shard.empty = False
        job = self.state.job
        recorded = job is not None and job.recording and shard in job.sources
        # Marked before the write: a search that starts after this write returns never trusts a view for them.
        if shard.role == "sealed":
            shard.touched.update(points)
        if job is not None and recorded:
            job.touched.update(points)
        if vector is not None and self.state.readers is not None:
            self.state.readers.forget_vector(shard.name, vector[0])
        shard.edge.update(op)
        if job is not None and recorded:
            job.ops.append((needs_point, op, vector))
