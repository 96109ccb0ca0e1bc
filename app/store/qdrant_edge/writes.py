"""The write protocol of the embedded store (see "Concurrency" in __init__.py).

A write holds the write gate in shared mode (so the shard set cannot change under it) plus the lock
of each shard it touches, and records its ops for a job that is copying one of those shards.
"""

from __future__ import annotations

from collections.abc import Callable
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
        self, shard: Shard, op: UpdateOperation, needs_point: str | None, vector: tuple[str, int] | None = None
    ) -> None:
        """Apply one op to a shard (caller holds its lock or the exclusive gate) and record it for a job
        copying it.

        `needs_point`: the point the op needs to exist (a patch), so that its replay skips it if the
        point is gone from the job's result. `vector`: the named vector (name, dim) the op creates or
        deletes (a model version added or retired), so that its replay is idempotent.
        """
        shard.edge.update(op)
        job = self.state.job
        if job is not None and job.recording and shard in job.sources:
            job.ops.append((needs_point, op, vector))
