"""Running one maintenance job of the embedded store, and making the spare hot shard (see "Maintenance"
in __init__.py).

A job copies its source shards (holding their locks) into `tmp-<target>/`, has a niced
`python -m app.store.qdrant_edge.builder build --hold` child index the copies, loads the result while the
child still maps it, then, holding the write gate exclusively, replays the ops recorded meanwhile,
writes the manifest and swaps the shard list. The sources are closed once their readers are gone.
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

from qdrant_edge import EdgeShard

from app.store.qdrant_edge.concurrency import _ShardAccess
from app.store.qdrant_edge.files import _copy_dir, _fsync_path, _remove_dir, _write_back
from app.store.qdrant_edge.manifest import STAGING_PREFIX
from app.store.qdrant_edge.planning import _Job, _JobAborted
from app.store.qdrant_edge.shard import _gil_hold, _Shard

log = logging.getLogger("lookalike.store.edge")


class _JobRunner(_ShardAccess):
    """Runs build/merge jobs and makes spare shards, each in an edge_builder subprocess."""

    def _spawn(
        self, job: _Job | None, args: list[str], while_pinned: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        """Run an edge_builder command; call `while_pinned(result)` while the child still maps the
        result's files (so that EdgeShard.load finds them in memory), then let the child exit."""
        cmd = [
            sys.executable,
            "-m",
            "app.store.qdrant_edge.builder",
            args[0],
            "--dim",
            str(self._dim),
            "--nice",
            str(self.builder_nice),
            "--parent-pid",
            str(os.getpid()),
            "--hold",
            *args[1:],
        ]
        # cwd: the project root, so `-m app.store...` resolves to this very code.
        cwd = Path(__file__).resolve().parents[3]
        with tempfile.TemporaryFile("w+", encoding="utf-8") as err:  # a file: no pipe to keep drained
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, cwd=cwd)
            assert proc.stdin is not None and proc.stdout is not None
            with self._lock:
                self._procs.add(proc)
                stopping = self._stopping
            result: dict[str, Any] | None = None
            try:
                if stopping:
                    proc.terminate()  # close() collected the children before this one existed
                if job is not None:
                    job.proc = proc
                    self._run_hook("spawned", job)
                line = proc.stdout.readline()  # the result, once the child has pinned it
                if line.strip() and not self._stopping:
                    result = json.loads(line)
                    while_pinned(result)
            finally:
                proc.stdin.close()
                proc.wait()
                with self._lock:
                    self._procs.discard(proc)
                err.seek(0)
                lines = err.read().splitlines()
                for text in lines:
                    log.info("edge_builder[%d]: %s", proc.pid, text)
        if self._stopping:
            raise _JobAborted
        if result is None:
            tail = " | ".join(lines[-3:])
            raise RuntimeError(f"edge_builder {args[0]} exited with {proc.returncode}: {tail}")
        return result

    def _prepare_spare(self) -> None:
        with self._lock:
            name = self._new_name()
        path = self.root / name
        loaded: list[EdgeShard] = []

        def load(_result: dict[str, Any]) -> None:
            with _gil_hold(f"load of spare {name}"):
                loaded.append(EdgeShard.load(str(path)))

        try:
            self._spawn(None, ["create", "--target", str(path)], load)
        except BaseException:
            for edge in loaded:
                edge.close()
            _remove_dir(path)
            raise
        with self._cond:
            if self._stopping:
                loaded[0].close()
                _remove_dir(path)
                raise _JobAborted
            self._spare = _Shard(name=name, path=path, edge=loaded[0], role="spare", rank=0)

    def _run_hook(self, phase: str, job: _Job) -> None:
        job.phase = phase
        if self._maintenance_hook is not None:
            self._maintenance_hook(phase, job.info())

    def _run_job(self, job: _Job) -> None:
        staging = self.root / f"{STAGING_PREFIX}{job.target}"
        final = self.root / job.target
        _remove_dir(staging)
        staging.mkdir()
        target: _Shard | None = None
        load_ms = 0.0

        def load(result: dict[str, Any]) -> None:
            nonlocal target, load_ms
            os.replace(staging / job.target, final)
            _fsync_path(self.root, directory=True)
            self._run_hook("built", job)
            t_load = time.perf_counter()
            with _gil_hold(f"load of {job.target}"):
                edge = EdgeShard.load(str(final))  # the one unavoidable GIL hold of a job
            load_ms = (time.perf_counter() - t_load) * 1e3
            target = _Shard(
                name=job.target,
                path=final,
                edge=edge,
                role="sealed",
                rank=max(s.rank for s in job.sources),
                points=int(result["points"]),
            )

        try:
            copies = self._snapshot_sources(job, staging)
            self._run_hook("copied", job)
            if self._stopping:
                raise _JobAborted
            result = self._spawn(job, ["build", "--target", str(staging / job.target), *map(str, copies)], load)
            assert target is not None
            self._swap(job, target)
        except BaseException:
            if target is not None and target not in self._shards:
                target.close()
            if final.exists() and (target is None or target not in self._shards):
                _remove_dir(final)
            raise
        finally:
            _remove_dir(staging)
        self._counters["builds" if job.kind == "build" else "merges"] += 1
        self._dispose(job.sources)
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

    def _snapshot_sources(self, job: _Job, staging: Path) -> list[Path]:
        with self._lock:
            job.recording = True  # from here on, writes to the sources are also logged for replay
        ordered = sorted(job.sources, key=lambda s: s.name)
        for s in ordered:
            s.lock.acquire()  # writers of these shards wait; everything else keeps flowing
        try:
            # No flush(): it fsyncs under the GIL (100-300 ms measured on a busy disk). With the shard
            # locked nothing changes its files, so the copy is exactly what a kill -9 at this
            # instant would leave, and the builder recovers it from the WAL like a restart would.
            copies = []
            for s in sorted(job.sources, key=lambda s: s.rank):  # oldest first: newer copies win
                dst = staging / s.name
                _copy_dir(s.path, dst)
                copies.append(dst)
            return copies
        finally:
            for s in ordered:
                s.lock.release()

    def _swap(self, job: _Job, target: _Shard) -> None:
        with self._gate.exclusive():  # no write is in flight while the op log is replayed
            if self._stopping:
                raise _JobAborted
            for needs_point, op in job.ops:
                # A patch recorded after the point was deleted (or before it moved) finds nothing.
                if needs_point is not None and not target.edge.retrieve([needs_point], False, False):
                    continue
                target.edge.update(op)
            if job.ops:
                target.wal.sync()
            target.points = target.edge.info().points_count
            sources = set(job.sources)
            remaining = [s for s in self._shards if s not in sources]
            new_list = sorted([*remaining, target], key=lambda s: s.rank, reverse=True)
            self._write_manifest([(s, {}) for s in new_list])
            with self._cond:
                self._shards = new_list
                for s in job.sources:
                    s.retired = True
                self._cond.notify_all()
            if job.ops:
                log.info("replayed %d ops recorded during the job onto %s", len(job.ops), target.name)

    def _dispose(self, shards: list[_Shard]) -> None:
        with self._cond:
            self._wait_readers_locked(shards)
        _write_back()  # close() flushes under the GIL; make that flush find nothing to do
        for i, s in enumerate(shards):
            if i:
                time.sleep(0.2)  # one GIL hold at a time, with request threads running in between
            with _gil_hold(f"close of {s.name}"):
                s.close()
            _remove_dir(s.path)
