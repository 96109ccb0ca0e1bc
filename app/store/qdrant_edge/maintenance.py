"""When the embedded store does maintenance: freezing the full hot shard, and the two background
threads (one keeps a spare hot shard ready, one runs build/merge jobs, one job at a time).
"""

from __future__ import annotations

import logging
import time

from app.store.qdrant_edge.jobs import _JobRunner
from app.store.qdrant_edge.planning import _Job, _JobAborted, _plan_job

log = logging.getLogger("lookalike.store.edge")


class _Maintenance(_JobRunner):
    """Freezes and the maintenance threads (started by EdgeStore.ensure_collection)."""

    # ------------------------------------------------------------ freeze

    def _maybe_freeze(self) -> None:
        with self._lock:
            if not self._shards or self._spare is None:
                if self._shards and self._shards[0].edge.info().points_count >= self.hot_max:
                    self._cond.notify_all()  # the maintenance thread prepares a spare, then freezes
                return
            if self._shards[0].edge.info().points_count < self.hot_max:
                return
        self._freeze()

    def _freeze(self) -> None:
        with self._gate.exclusive():
            with self._lock:
                if not self._open or self._stopping or self._spare is None or not self._shards:
                    return
                hot, spare = self._shards[0], self._spare
                points = hot.edge.info().points_count
                if points < self.hot_max:
                    return
                new_rank = self._next_id
                self._next_id += 1
            after = dict(role="frozen", points=points)
            self._write_manifest(
                [(spare, {"role": "hot", "rank": new_rank})] + [(s, after if s is hot else {}) for s in self._shards]
            )
            with self._cond:
                hot.role, hot.points = "frozen", points
                spare.role, spare.rank = "hot", new_rank
                self._shards = [spare, *self._shards]
                self._spare = None
                self._counters["freezes"] += 1
                self._cond.notify_all()
        log.info("froze %s at %d points; %s is hot", hot.name, points, spare.name)

    # ------------------------------------------------------------ scheduling

    def _plan_job_locked(self) -> _Job | None:
        return _plan_job(
            self._shards,
            hot_max=self.hot_max,
            merge_fanin=self.merge_fanin,
            max_shard_points=self.max_shard_points,
        )

    def _freeze_due_locked(self) -> bool:
        return bool(self._shards) and self._shards[0].edge.info().points_count >= self.hot_max

    def _job_due_locked(self) -> bool:
        return time.monotonic() >= self._retry_at and self._plan_job_locked() is not None

    def _busy_locked(self) -> bool:
        """Work is pending: a spare to make, a freeze to do, or a job to run (failed ones included)."""
        if self._stopping or not self._shards:
            return False
        return self._spare is None or self._freeze_due_locked() or self._plan_job_locked() is not None

    def _keep_spare(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and self._spare is not None and not self._freeze_due_locked():
                    self._cond.wait(1.0)
                if self._stopping:
                    return
                need_spare = self._spare is None
            try:
                if need_spare:
                    self._prepare_spare()
                self._maybe_freeze()
            except _JobAborted:
                return
            except Exception:
                log.exception("could not prepare the next hot shard; will retry")
                with self._cond:
                    self._cond.wait(1.0)

    def _run_jobs(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._job_due_locked():
                    self._cond.wait(max(0.05, min(1.0, self._retry_at - time.monotonic())))
                if self._stopping:
                    return
                job = self._plan_job_locked()
                assert job is not None
                job.target = self._new_name()
                self._job = job
            try:
                self._run_job(job)
                self._failures = 0
            except _JobAborted:
                pass
            except Exception:
                self._failures += 1
                self._retry_at = time.monotonic() + min(30.0, 0.25 * 2**self._failures)
                self._counters["failed_jobs"] += 1
                log.exception("embedded store %s job failed (attempt %d); will retry", job.kind, self._failures)
            finally:
                with self._cond:
                    self._job = None
                    self._cond.notify_all()
