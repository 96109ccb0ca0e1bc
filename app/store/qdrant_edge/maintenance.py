"""When the embedded store does maintenance: freezing the full hot shard, and the background threads
(one keeps a spare hot shard ready, one runs build/merge jobs, one job at a time, one unmaps the pages of
sealed shards' originals and payloads that reads faulted in: page_cache.py).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

from app.store.qdrant_edge.jobs import JobRunner
from app.store.qdrant_edge.page_cache import Releaser
from app.store.qdrant_edge.planning import Job, JobAborted, plan_job
from app.store.qdrant_edge.state import StoreState

log = logging.getLogger("lookalike.store.edge")


class MaintenanceScheduler:
    """Freezes, the spare and job threads, and the choice of the next job."""

    def __init__(self, state: StoreState, runner: JobRunner) -> None:
        self.state = state
        self.runner = runner
        self._threads: list[threading.Thread] = []
        self._failures = 0  # consecutive failed jobs (job thread only)
        self._retry_at = 0.0  # no job before this time.monotonic() (after a failure)
        self._releaser: Releaser | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the threads: one keeps an empty spare shard ready (so a freeze never waits behind
        a long merge), one runs build/merge jobs (both mostly wait on subprocesses), one releases the pages
        reads mapped (page_cache.Releaser)."""
        name = self.state.config.collection
        with self.state.cond:
            self.state.stopping = False
        self._threads = [
            threading.Thread(target=self._keep_spare, name=f"edge-spare-{name}", daemon=True),
            threading.Thread(target=self._run_jobs, name=f"edge-jobs-{name}", daemon=True),
        ]
        for t in self._threads:
            t.start()
        self._releaser = Releaser(self.runner.shard_set.sealed_folders, name)
        self._releaser.start()

    def stop(self) -> None:
        """Stop the threads: running builder children are terminated and their jobs abandoned."""
        with self.state.cond:
            self.state.stopping = True
            self.state.cond.notify_all()
        self.runner.terminate_children()
        for t in self._threads:
            t.join()
        self._threads = []
        if self._releaser is not None:
            self._releaser.stop()
            self._releaser = None

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no job runs or is due and no freeze is pending; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self.state.cond:
            while self.state.open and (self.state.job is not None or self._busy_locked()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.state.cond.wait(min(remaining, 0.5))
            return True

    def wake(self) -> None:
        """Re-plan now (a sealed shard may need a reseal)."""
        with self.state.cond:
            self.state.cond.notify_all()

    # ------------------------------------------------------------ freeze

    def maybe_freeze(self) -> None:
        """After a write: freeze the hot shard if it is full (or wake the spare thread to make a spare)."""
        state = self.state
        with state.cond:
            if not state.shards or state.spare is None:
                if self._freeze_due_locked():
                    state.cond.notify_all()  # the maintenance thread prepares a spare, then freezes
                return
            if not self._freeze_due_locked():
                return
        self.freeze()

    def freeze(self) -> None:
        """The spare becomes the hot shard, the full hot shard turns frozen (a manifest write)."""
        state = self.state
        with state.gate.exclusive():
            with state.cond:
                if not state.open or state.stopping or state.spare is None or not state.shards:
                    return
                hot, spare = state.shards[0], state.spare
                points = hot.edge.info().points_count
                if points < state.config.hot_max:
                    return
                new_rank = state.manifest.take_number()
            # The spare was made with the vectors of its time; a version added or retired since changes them.
            for op in spare.vector_changes(state.manifest.vector_dims()):
                spare.edge.update(op)
            state.manifest.write(
                [replace(spare.record(), role="hot", rank=new_rank)]
                + [replace(s.record(), role="frozen", points=points) if s is hot else s.record() for s in state.shards]
            )
            with state.cond:
                hot.role, hot.points = "frozen", points
                spare.role, spare.rank = "hot", new_rank
                state.shards = [spare, *state.shards]
                state.spare = None
                state.counters["freezes"] += 1
                state.cond.notify_all()
        log.info("froze %s at %d points; %s is hot", hot.name, points, spare.name)

    # ------------------------------------------------------------ planning (callers hold state.cond)

    def plan_locked(self) -> Job | None:
        """The next job (target not named yet), or None when nothing is to do."""
        config = self.state.config
        planned = plan_job(
            self.state.shards,
            hot_max=config.hot_max,
            merge_fanin=config.merge_fanin,
            max_shard_points=config.max_shard_points,
            rewritten=lambda s: s.rewritten,
        )
        if planned is None:
            return None
        kind, sources = planned
        return Job(kind=kind, sources=sources, target="")

    def _freeze_due_locked(self) -> bool:
        shards = self.state.shards
        return bool(shards) and shards[0].edge.info().points_count >= self.state.config.hot_max

    def _job_due_locked(self) -> bool:
        return time.monotonic() >= self._retry_at and self.plan_locked() is not None

    def _busy_locked(self) -> bool:
        """Work is pending: a spare to make, a freeze to do, or a job to run (failed ones included)."""
        state = self.state
        if state.stopping or not state.shards:
            return False
        return state.spare is None or self._freeze_due_locked() or self.plan_locked() is not None

    # ------------------------------------------------------------ the two threads

    def _keep_spare(self) -> None:
        state = self.state
        while True:
            with state.cond:
                while not state.stopping and state.spare is not None and not self._freeze_due_locked():
                    state.cond.wait(1.0)
                if state.stopping:
                    return
                need_spare = state.spare is None
            try:
                if need_spare:
                    self.runner.prepare_spare()
                self.maybe_freeze()
            except JobAborted:
                return
            except Exception:
                log.exception("could not prepare the next hot shard; will retry")
                with state.cond:
                    state.cond.wait(1.0)

    def _run_jobs(self) -> None:
        state = self.state
        while True:
            with state.cond:
                while not state.stopping and not self._job_due_locked():
                    state.cond.wait(max(0.05, min(1.0, self._retry_at - time.monotonic())))
                if state.stopping:
                    return
                job = self.plan_locked()
                assert job is not None
                job.target = state.manifest.new_name()
                state.job = job
            try:
                self.runner.run(job)
                self._failures = 0
            except JobAborted:
                pass
            except Exception:
                self._failures += 1
                self._retry_at = time.monotonic() + min(30.0, 0.25 * 2**self._failures)
                state.counters["failed_jobs"] += 1
                log.exception("embedded store %s job failed (attempt %d); will retry", job.kind, self._failures)
            finally:
                with state.cond:
                    state.job = None
                    state.cond.notify_all()
