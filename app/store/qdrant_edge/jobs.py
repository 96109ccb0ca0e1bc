"""Running one maintenance job of the embedded store, and making the spare hot shard (see
"Maintenance" in __init__.py).

A job copies its source shards (holding their locks) into `tmp-<target>/`, has a niced
`python -m app.store.qdrant_edge.builder build --hold` child index the copies, loads the result while
the child still maps it, then, holding the write gate exclusively, replays the ops recorded
meanwhile, writes the manifest and swaps the shard list. The sources are closed once their readers
are gone.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qdrant_edge import EdgeShard, UpdateOperation

from app.store.qdrant_edge.builder import create_vector
from app.store.qdrant_edge.files import copy_dir, fsync_path, remove_dir
from app.store.qdrant_edge.manifest import STAGING_PREFIX
from app.store.qdrant_edge.planning import Job, JobAborted
from app.store.qdrant_edge.shard import Shard, gil_hold
from app.store.qdrant_edge.shard_set import ShardSet
from app.store.qdrant_edge.state import StoreState

log = logging.getLogger("lookalike.store.edge")

BUILDER_MODULE = "app.store.qdrant_edge.builder"


def builder_env() -> dict[str, str]:
    """The environment of a builder child: this process's, with PYTHONPATH = this process's sys.path.

    The child must run the very code this process runs. Relying on the installed package is not
    enough (a checkout or git worktree may be imported instead of what the venv's editable install
    points at), and neither is the working directory (the server may run from anywhere). Passing the
    import path as it is now makes `-m app.store.qdrant_edge.builder` resolve wherever `app` came from
    here: PYTHONPATH entries come before site-packages and its editable-install finders.
    """
    cwd = os.getcwd()
    path = [os.path.join(cwd, p) if not os.path.isabs(p) else p for p in sys.path]  # "" = the cwd
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


Recorded = tuple[str | None, UpdateOperation, tuple[str, int] | None]


def move_into_place(built: Path, final: Path) -> None:
    """Move a builder's result from its staging folder to its place in the collection (not in the
    manifest yet: garbage on open until a swap names it)."""
    os.replace(built, final)
    fsync_path(final.parent, directory=True)


def load_built(final: Path) -> tuple[EdgeShard, float]:
    """Load a built shard while its builder still maps it (see builder.py); returns it and the ms taken."""
    t = time.perf_counter()
    with gil_hold(f"load of {final.name}"):
        edge = EdgeShard.load(str(final))  # the one unavoidable GIL hold of a job
    return edge, (time.perf_counter() - t) * 1e3


def replay(target: Shard, ops: list[Recorded], wanted: dict[str, int]) -> None:
    """Apply the writes recorded during a job to its result, then give it exactly the `wanted` vectors.

    The result has the vector set of the moment its builder started, before or after a version was
    added or retired while the job ran. So every named vector the log creates or deletes is made
    present first (the writes recorded before a deletion still apply), the writes are replayed in
    order, and the vector set is set to the manifest's last (a retired vector goes, with its data).
    """
    have = target.vectors()
    for name, dim in {v for _, _, v in ops if v is not None}:
        if name not in have:
            target.edge.update(create_vector(name, dim))
            have[name] = dim
    for needs_point, op, vector in ops:
        if vector is not None:
            continue  # a vector created or deleted: done above and below
        # A patch recorded after the point was deleted (or before it moved) finds nothing.
        if needs_point is not None and not target.edge.retrieve([needs_point], False, False):
            continue
        target.edge.update(op)
    for op in target.vector_changes(wanted):
        target.edge.update(op)


class JobRunner:
    """Runs build/merge jobs and makes spare shards, each in a builder subprocess."""

    def __init__(self, state: StoreState, shard_set: ShardSet) -> None:
        self.state = state
        self.shard_set = shard_set
        self._procs: set[subprocess.Popen[str]] = set()  # running builder children; guarded by state.cond

    # ------------------------------------------------------------ builder children

    def terminate_children(self) -> None:
        """Ask every running builder to stop (the store is closing: state.stopping is set)."""
        with self.state.cond:
            procs = list(self._procs)
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()

    def spawn(self, job: Job | None, args: list[str], while_pinned: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Run a builder command; call `while_pinned(result)` while the child still maps the result's
        files (so that EdgeShard.load finds them in memory), then let the child exit."""
        state = self.state
        cmd = [
            sys.executable,
            "-m",
            BUILDER_MODULE,
            args[0],
            "--vectors",
            json.dumps(state.manifest.vector_dims()),
            "--index",
            state.config.index.to_json(),
            "--nice",
            str(state.config.builder_nice),
            "--parent-pid",
            str(os.getpid()),
            "--hold",
            *args[1:],
        ]
        with tempfile.TemporaryFile("w+", encoding="utf-8") as err:  # a file: no pipe to keep drained
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=builder_env()
            )
            assert proc.stdin is not None and proc.stdout is not None
            with state.cond:
                self._procs.add(proc)
                stopping = state.stopping
            result: dict[str, Any] | None = None
            try:
                if stopping:
                    proc.terminate()  # close() collected the children before this one existed
                if job is not None:
                    job.proc = proc
                    self.run_hook("spawned", job)
                line = proc.stdout.readline()  # the result, once the child has pinned it
                if line.strip() and not state.stopping:
                    result = json.loads(line)
                    while_pinned(result)
            finally:
                proc.stdin.close()
                proc.wait()
                with state.cond:
                    self._procs.discard(proc)
                err.seek(0)
                lines = err.read().splitlines()
                for text in lines:
                    log.info("edge_builder[%d]: %s", proc.pid, text)
        if state.stopping:
            raise JobAborted
        if result is None:
            tail = " | ".join(lines[-3:])
            raise RuntimeError(f"edge_builder {args[0]} exited with {proc.returncode}: {tail}")
        return result

    def run_hook(self, phase: str, job: Job) -> None:
        job.phase = phase
        hook = self.state.maintenance_hook
        if hook is not None:
            hook(phase, job.info())

    # ------------------------------------------------------------ the spare hot shard

    def prepare_spare(self) -> None:
        """Make an empty plain shard in a builder child, load it and keep it as `state.spare`."""
        state = self.state
        name = state.manifest.new_name()
        path = state.config.root / name
        loaded: list[EdgeShard] = []

        def load(_result: dict[str, Any]) -> None:
            with gil_hold(f"load of spare {name}"):
                loaded.append(EdgeShard.load(str(path)))

        try:
            self.spawn(None, ["create", "--target", str(path)], load)
        except BaseException:
            for edge in loaded:
                edge.close()
            remove_dir(path)
            raise
        with state.cond:
            if state.stopping:
                loaded[0].close()
                remove_dir(path)
                raise JobAborted
            state.spare = Shard(name=name, path=path, edge=loaded[0], role="spare", rank=0, empty=True)

    # ------------------------------------------------------------ build/merge jobs

    def run(self, job: Job) -> None:
        """Run one job to its end: copy, build, load, swap, dispose of the sources."""
        state = self.state
        root = state.config.root
        staging = root / f"{STAGING_PREFIX}{job.target}"
        final = root / job.target
        remove_dir(staging)
        staging.mkdir()
        target: Shard | None = None
        load_ms = 0.0

        def load(result: dict[str, Any]) -> None:
            nonlocal target, load_ms
            move_into_place(staging / job.target, final)
            if state.readers is not None:  # now, while its files are exactly what the builder flushed
                state.readers.link(job.target, final)
            self.run_hook("built", job)
            edge, load_ms = load_built(final)
            target = Shard(
                name=job.target,
                path=final,
                edge=edge,
                role="sealed",
                rank=max(s.rank for s in job.sources),
                points=int(result["points"]),
            )

        try:
            copies = self.snapshot_sources(job, staging)
            self.run_hook("copied", job)
            if state.stopping:
                raise JobAborted
            result = self.spawn(job, ["build", "--target", str(staging / job.target), *map(str, copies)], load)
            assert target is not None
            self.swap(job, target)
        except BaseException:
            if state.readers is not None and (target is None or target not in state.shards):
                state.readers.drop(job.target)
            if target is not None and target not in state.shards:
                target.close()
            if final.exists() and (target is None or target not in state.shards):
                remove_dir(final)
            raise
        finally:
            remove_dir(staging)
        with state.cond:
            state.counters[{"build": "builds", "merge": "merges", "reseal": "reseals"}[job.kind]] += 1
            state.counters["points_built"] += int(result.get("upserted", target.points))
        self.shard_set.dispose(job.sources)
        log.info(
            "%s %s -> %s (%d points; build %.1f s, optimize %.1f s, load %.0f ms)",
            job.kind,
            [s.name for s in job.sources],
            target.name,
            target.points,
            result.get("copy_s", 0.0) + result.get("optimize_s", 0.0),
            result.get("optimize_s", 0.0),
            load_ms,
        )

    def snapshot_sources(self, job: Job, staging: Path) -> list[Path]:
        """Copy the sources' directories into `staging` (oldest first), each exactly as a kill -9 now
        would leave it; from here on, writes to the sources are also recorded for replay."""
        with self.state.cond:
            job.recording = True
        ordered = sorted(job.sources, key=lambda s: s.name)
        for s in ordered:
            s.lock.acquire()  # writers of these shards wait; everything else keeps flowing
        try:
            # No flush(): it fsyncs under the GIL (BENCHMARKS.md, "Index maintenance"). With the shard
            # locked nothing changes its files, so the copy is exactly what a kill -9 at this
            # instant would leave, and the builder recovers it from the WAL like a restart would.
            copies = []
            for s in sorted(job.sources, key=lambda s: s.rank):  # oldest first: newer copies win
                dst = staging / s.name
                copy_dir(s.path, dst)
                copies.append(dst)
            return copies
        finally:
            for s in ordered:
                s.lock.release()

    def swap(self, job: Job, target: Shard) -> None:
        """Replay the recorded ops onto `target`, persist and publish it in place of the sources."""
        with self.state.gate.exclusive():  # no write is in flight while the op log is replayed
            if self.state.stopping:
                raise JobAborted
            # The view was linked before the replay: it has none of the replayed writes.
            target.touched = set(job.touched)
            for _, _, vector in job.ops:
                if vector is not None and self.state.readers is not None:
                    self.state.readers.forget_vector(target.name, vector[0])
            self.install(job.sources, target, job.ops)
            if job.ops:
                log.info("replayed %d ops recorded during the job onto %s", len(job.ops), target.name)

    def install(self, sources: list[Shard], target: Shard, ops: list[Recorded]) -> None:
        """Give `target` the recorded ops and the manifest's vectors, then write the manifest with it in
        place of `sources` (none: a bulk load's shard) and publish the list. The caller holds the gate
        exclusively."""
        state = self.state
        replay(target, ops, state.manifest.vector_dims())
        target.wal.sync()
        target.points = target.edge.info().points_count
        new_list = self.shard_set.swap(sources, target)
        state.manifest.write([s.record() for s in new_list])
        self.shard_set.publish(new_list, retired=sources)
