"""Embedded store: Qdrant Edge shards arranged as a small log-structured merge tree (LSM).

Why a tree of shards and not one shard
--------------------------------------
Qdrant Edge builds HNSW only inside `EdgeShard.optimize()`, and that call (like `create()`,
`load()`, `flush()` and `close()`) holds the Python GIL for its whole run: optimizing 20k x 768
points froze every thread of the process for ~12 s. One process may open a shard path. So the
serving process never optimizes: indexes are built by a subprocess on copies, and the server only
swaps finished shards in.

Layout (root = QDRANT_PATH/<collection>/)
-----------------------------------------
- `manifest.json`: dim, model_version, a generation counter and the shard list
  (name, role, rank, points). Replaced atomically (tmp file, fsync, os.replace, fsync dir).
  Anything in root that the manifest does not name is garbage from a crash and is removed on open.
- `shard-NNNNNN/`: one EdgeShard each, with a role:
  - hot: plain index, appendable; receives every upsert.
  - frozen: a former hot shard that reached `hot_max`; still serves reads, deletes and patches
    until the index built from it replaces it.
  - sealed: HNSW-indexed, built out of process; never receives upserts (but deletes and patches).
  An item lives in exactly one shard: an upsert writes the hot shard and deletes the point from
  the other shards that hold it. `rank` orders shards by data age (hot is newest; a built shard
  inherits the newest rank of its sources), so if a crash between those two steps leaves a
  duplicate, reads and merges keep the newest copy.
- `tmp-*`: staging of a running job; never in the manifest.

Maintenance (two background threads that mostly wait on subprocesses; one job at a time: 2 cores)
--------------------------------------------------------------------------------------------------
- Freeze: when the hot shard holds >= `hot_max` points, an empty *spare* shard becomes the hot shard
  and the old one turns frozen. The spare is made ahead of time by `edge_builder create` in a
  subprocess (create() holds the GIL ~100 ms) and loaded by the spare thread, so a freeze is just a
  manifest write. Until the first spare exists (~1 s after open) the hot shard may overshoot.
- Build job (frozen -> sealed) and merge job (size-tiered: `merge_fanin` sealed shards of one size
  tier, tier t holding sizes in [hot_max * fanin^t, hot_max * fanin^(t+1)), never producing more
  than `max_shard_points`, default 2 * hot_max * fanin; builds go first):
  1. Holding the sources' shard locks (writers of *those* shards wait; new items keep flowing into
     the hot shard), `cp -a` their directories into `tmp-<target>/`. No flush(): it fsyncs under
     the GIL. With the shards locked nothing changes their files, so each copy is exactly what a
     kill -9 at that instant would leave, and the builder recovers it from the WAL like a restart.
     From just before this, every op applied to a source is also appended to the job's op log.
  2. `python -m app.store.edge_builder build --hold` (subprocess, niced, dies with its parent,
     stderr copied to the log) loads the copies, upserts all points into a new shard, creates the
     payload indexes, optimize(), flush, close, then maps every page of the result and waits.
     The job thread only waits on it.
  3. The server loads the result while the builder still maps it: load() drops the files from the
     page cache (fadvise DONTNEED) and faults them back in under the GIL, and Linux cannot drop pages
     another process maps, so the load is CPU only (40-70 ms of CPU per 10k x 768 points; logged when
     > 50 ms). Then, holding the write gate exclusively: replay the op log, fsync the target's WAL,
     write the manifest (target replaces sources), swap the in-memory list. The sources are closed
     once their last reader is gone (reference counts), one at a time, then deleted.
  A crash at any point leaves either the old manifest (sources intact; staging and unswapped
  targets removed on open; the frozen shard is rebuilt) or the new one (target holds everything).
- Bulk file work is always one call (os.sync, a `cp`/`rm` child): each Python-level syscall drops
  and re-takes the GIL, and re-taking costs up to the 5 ms switch interval while request threads
  run, so a per-file walk took 24 s for one swap under a closed-loop reader.

Concurrency
-----------
- Readers (get/similar/count) take `_lock` only to copy the shard list and bump reference counts,
  then query outside any lock; a retired shard is closed after its readers leave.
- Writers hold the write gate in shared mode plus the lock of each shard they touch (taken without
  waiting; if a job is copying that shard, the writer leaves the gate, waits, and re-plans).
  Freeze and swap take the gate exclusively (a few ms), so a write never sees the shard set change.

Durability (measured, qdrant-edge-py 0.9.0)
-------------------------------------------
- update() appends to the shard's write-ahead log, which is a memory-mapped file: strace shows no
  write()/msync/fsync during update(). A kill -9 right after update() returns loses nothing (the
  data is in the kernel page cache; tests/test_store_edge.py kills writers to check it), but a power
  loss or kernel crash could.
- flush() and close() msync/fsync every segment while holding the GIL: 20-350 ms measured on this
  (shared, busy) disk, so calling flush() after each write would freeze reads far beyond the budget.
- Decision: after each write the store fsyncs the touched shards' WAL segment files from Python
  (`os.fsync` releases the GIL; ~1 ms, descriptors kept open), which persists the mmap-dirtied WAL
  pages. A returned upsert/patch/delete survives kill -9 (tested) and should survive a host crash
  (fsynced WAL; not testable here). flush() is called only on close(), after os.sync() so it has
  little left to write. `sync_wal=False` drops the per-write fsync (process-crash durability only).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from qdrant_edge import (
    EdgeShard,
    FieldCondition,
    Filter,
    HasIdCondition,
    MatchValue,
    Point,
    Query,
    QueryRequest,
    RangeFloat,
    UpdateOperation,
)

from app.store.base import (
    CollectionMismatch,
    Hit,
    SimilarFilters,
    StoreUnavailableError,
    point_id,
)
from app.store.edge_builder import create_plain_shard

log = logging.getLogger("lookalike.store.edge")

T = TypeVar("T")

MANIFEST = "manifest.json"
LOCK_FILE = ".lock"
STAGING_PREFIX = "tmp-"
FORMAT_VERSION = 1

# Hook signature for tests: (phase, job info). Phases: "copied", "spawned", "built".
MaintenanceHook = Callable[[str, dict[str, Any]], None]


# ---------------------------------------------------------------- file helpers
#
# Every Python-level syscall releases and re-takes the GIL, and re-taking it costs up to the switch
# interval (5 ms) while request threads are busy. A directory walk with an fsync per file is thousands
# of such round trips (measured: a 100-point swap took 24 s under a closed-loop reader). So bulk file
# work is one call each: os.sync(), or `cp`/`rm` in a child process that the thread just waits on.


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


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_back() -> None:
    """Write back all dirty pages (shard mmaps included) in one GIL-free call.

    The engine's flush()/close() msync and fsync under the GIL; after this they find nothing to write.
    """
    os.sync()


def _copy_dir(src: Path, dst: Path, attempts: int = 3) -> None:
    for attempt in range(attempts):
        done = subprocess.run(["cp", "-a", "--", str(src), str(dst)], capture_output=True, text=True)
        if done.returncode == 0:
            return
        # The WAL preallocates its next segment in a background thread (tmp-open-N, then renamed);
        # a file renamed between cp's listing and its open fails the copy. Start over.
        _remove_dir(dst)
        if attempt == attempts - 1:
            raise RuntimeError(f"copying {src} failed: {done.stderr.strip()}")


def _remove_dir(path: Path) -> None:
    subprocess.run(["rm", "-rf", "--", str(path)], check=True, capture_output=True)


class _WalSyncer:
    """fsyncs one shard's write-ahead log (mmap-written segment files) after each write.

    File descriptors stay open between writes, so a write costs one listdir plus one fsync per
    segment (the engine keeps two: the current one and a preallocated one).
    """

    def __init__(self, shard_dir: Path) -> None:
        self._dir = shard_dir / "wal"
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def sync(self) -> None:
        with self._lock:
            names = {n for n in os.listdir(self._dir) if not n.startswith(("tmp-", "."))}
            if names != self._fds.keys():
                for gone in self._fds.keys() - names:
                    os.close(self._fds.pop(gone))
                for new in names - self._fds.keys():
                    with contextlib.suppress(FileNotFoundError):
                        self._fds[new] = os.open(self._dir / new, os.O_RDONLY)
                _fsync_path(self._dir, directory=True)  # the segment set changed: persist the names
            for fd in self._fds.values():
                os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_path(path.parent, directory=True)


# ---------------------------------------------------------------- locking primitives


class _WriteGate:
    """Shared by writes, exclusive for freeze/swap/close. Exclusive-preferring: a stream of writes
    cannot starve a swap (writers never wait inside the gate for long, see EdgeStore._mutate)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._shared = 0
        self._exclusive = False
        self._exclusive_waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._exclusive_waiting:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                if self._shared == 0:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._exclusive_waiting += 1
            try:
                while self._exclusive or self._shared:
                    self._cond.wait()
            finally:
                self._exclusive_waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


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


@dataclass(eq=False)
class _Job:
    kind: str  # "build" | "merge"
    sources: list[_Shard]
    target: str
    recording: bool = False
    # (point id whose existence the op needs, or None; the op), in application order
    ops: list[tuple[str | None, UpdateOperation]] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    phase: str = "planned"

    def info(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "sources": [s.name for s in self.sources],
            "target": self.target,
            "phase": self.phase,
            "pid": self.proc.pid if self.proc is not None else None,
        }


class _JobAborted(Exception):
    pass


# ---------------------------------------------------------------- the store


class EdgeStore:
    """VectorStore on Qdrant Edge (embedded). See the module docstring for the design."""

    def __init__(
        self,
        path: Path,
        collection: str,
        *,
        hot_max: int = 10_000,
        merge_fanin: int = 4,
        max_shard_points: int | None = None,
        sync_wal: bool = True,
        builder_nice: int = 10,
    ) -> None:
        if hot_max < 1 or merge_fanin < 2:
            raise ValueError("hot_max must be >= 1 and merge_fanin >= 2")
        self.root = Path(path) / collection
        self.collection = collection
        self.hot_max = hot_max
        self.merge_fanin = merge_fanin
        # Loading a built shard holds the GIL ~4-10 ms per 1000 points (768-d) even with its pages
        # pinned, so no merge may produce more than this: a bounded freeze at the price of more
        # shards per query. The default lets tier-0 merges (~hot_max * fanin, with overshoot) happen
        # and stops the next tier (hot_max * fanin^2).
        self.max_shard_points = max_shard_points if max_shard_points is not None else 2 * hot_max * merge_fanin
        self.sync_wal = sync_wal
        self.builder_nice = builder_nice  # CPU niceness added by builder children (request threads win)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # reader counts, maintenance wake-ups, idleness
        self._gate = _WriteGate()
        self._shards: list[_Shard] = []  # rank descending: hot first
        self._spare: _Shard | None = None
        self._job: _Job | None = None
        self._open = False
        self._stopping = False
        self._dim = 0
        self._model_version = ""
        self._next_id = 1
        self._generation = 0
        self._lock_fd: int | None = None
        self._threads: list[threading.Thread] = []
        self._procs: set[subprocess.Popen[str]] = set()  # running edge_builder children
        self._failures = 0
        self._retry_at = 0.0
        self._counters = {"builds": 0, "merges": 0, "failed_jobs": 0, "freezes": 0}
        self._maintenance_hook: MaintenanceHook | None = None  # tests: observe/hold/kill a job

    # ------------------------------------------------------------ lifecycle

    def ensure_collection(self, dim: int, model_version: str) -> None:
        if self._open:
            self._check_matches(dim, model_version)
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self._acquire_dir_lock()
        try:
            manifest_path = self.root / MANIFEST
            if manifest_path.exists():
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
                self._dim, self._model_version = int(manifest["dim"]), str(manifest["model_version"])
                self._check_matches(dim, model_version)
                self._open_existing(manifest)
            else:
                self._dim, self._model_version = dim, model_version
                self._create_new()
        except BaseException:
            self._release_dir_lock()
            raise
        self._open = True
        self._stopping = False
        # Two threads: one keeps an empty spare shard ready (so a freeze never waits behind a long
        # merge), one runs build/merge jobs. Both mostly wait on subprocesses.
        self._threads = [
            threading.Thread(target=self._keep_spare, name=f"edge-spare-{self.collection}", daemon=True),
            threading.Thread(target=self._run_jobs, name=f"edge-jobs-{self.collection}", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def ready(self) -> bool:
        return self._open and not self._stopping

    def close(self) -> None:
        with self._cond:
            if not self._open:
                return
            self._stopping = True
            procs = list(self._procs)
            self._cond.notify_all()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for t in self._threads:
            t.join()
        self._threads = []
        with self._gate.exclusive():
            with self._cond:
                self._open = False
                shards = list(self._shards)
                if self._spare is not None:
                    shards.append(self._spare)
                self._wait_readers_locked(shards, timeout_s=30.0)
                self._shards, self._spare = [], None
            _write_back()
            for s in shards:
                s.edge.flush()
                s.close()
        self._release_dir_lock()

    def wait_for_maintenance(self, timeout_s: float) -> bool:
        """Block until no job runs or is due and no freeze is pending; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._open and (self._job is not None or self._busy_locked()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.5))
            return True

    def stats(self) -> dict[str, Any]:
        with self._reading() as shards:
            rows = []
            for s in shards:
                info = s.edge.info()
                rows.append(
                    {
                        "name": s.name,
                        "role": s.role,
                        "rank": s.rank,
                        "points": info.points_count,
                        "indexed_vectors": info.indexed_vectors_count,
                        "segments": info.segments_count,
                    }
                )
            with self._lock:
                job = self._job.info() if self._job is not None else None
                return {
                    "shards": rows,
                    "job": job,
                    "job_running": job is not None,
                    "spare_ready": self._spare is not None,
                    **self._counters,
                }

    # ------------------------------------------------------------ VectorStore API

    def upsert(self, payloads: list[dict[str, Any]], vectors: np.ndarray) -> list[bool]:
        if not self.ready():
            raise StoreUnavailableError("the embedded store is not open")
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(payloads) or vectors.shape[1] != self._dim:
            raise ValueError(f"vectors must have shape ({len(payloads)}, {self._dim}), got {vectors.shape}")
        ids: list[str] = []
        for p in payloads:
            item_id = p.get("item_id")
            if not isinstance(item_id, str) or not item_id:
                raise ValueError("every payload needs a non-empty string item_id")
            ids.append(point_id(item_id))
        if not ids:
            return []
        last = {pid: i for i, pid in enumerate(ids)}  # a repeated item in one batch: the last one wins
        points = [Point(pid, vectors[i].tolist(), dict(payloads[i])) for pid, i in last.items()]
        unique = list(last)
        existed: set[str] = set()

        def plan(shards: list[_Shard]) -> tuple[list[_Shard], Callable[[], None]]:
            hot = shards[0]
            elsewhere: list[tuple[_Shard, list[str]]] = []
            existed.clear()
            for s in shards:
                found = [str(r.id) for r in s.edge.retrieve(unique, False, False)]
                existed.update(found)
                if found and s is not hot:
                    elsewhere.append((s, found))

            def apply() -> None:
                self._apply(hot, UpdateOperation.upsert_points(points), None)
                # Written first, removed from older shards second: a crash in between leaves a
                # duplicate that reads resolve by rank, never a lost item.
                for s, found in elsewhere:
                    self._apply(s, UpdateOperation.delete_points(found), None)

            return [hot] + [s for s, _ in elsewhere], apply

        self._mutate(plan)
        seen: set[str] = set()
        created = []
        for pid in ids:
            created.append(pid not in existed and pid not in seen)
            seen.add(pid)
        self._maybe_freeze()
        return created

    def get(self, item_id: str) -> dict[str, Any] | None:
        pid = point_id(item_id)
        with self._reading() as shards:
            for s in shards:
                records = s.edge.retrieve([pid], True, False)
                if records:
                    return dict(records[0].payload or {})
        return None

    def patch(self, item_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        fields = dict(fields)
        if fields.pop("item_id", item_id) != item_id:
            raise ValueError("item_id cannot be changed by a patch")
        pid = point_id(item_id)
        to_set = {k: v for k, v in fields.items() if v is not None}
        to_unset = [k for k, v in fields.items() if v is None]

        def plan(shards: list[_Shard]) -> tuple[list[_Shard], Callable[[], dict[str, Any] | None]]:
            holders = [s for s in shards if s.edge.retrieve([pid], False, False)]

            def apply() -> dict[str, Any] | None:
                # Re-checked under the shard locks: a concurrent delete may have won the race, and
                # set_payload on a missing point raises.
                holders[:] = [s for s in holders if s.edge.retrieve([pid], False, False)]
                for s in holders:
                    if to_set:
                        self._apply(s, UpdateOperation.set_payload([pid], to_set), pid)
                    if to_unset:
                        self._apply(s, UpdateOperation.delete_payload([pid], to_unset), pid)
                if not holders:
                    return None
                records = holders[0].edge.retrieve([pid], True, False)
                return dict(records[0].payload or {}) if records else None

            return holders, apply

        return self._mutate(plan)

    def delete(self, item_id: str) -> bool:
        pid = point_id(item_id)

        def plan(shards: list[_Shard]) -> tuple[list[_Shard], Callable[[], bool]]:
            holders = [s for s in shards if s.edge.retrieve([pid], False, False)]

            def apply() -> bool:
                for s in holders:
                    self._apply(s, UpdateOperation.delete_points([pid]), None)
                return bool(holders)

            return holders, apply

        return self._mutate(plan)

    def similar(self, item_id: str, k: int, filters: SimilarFilters) -> list[Hit] | None:
        if k < 1:
            raise ValueError("k must be >= 1")
        pid = point_id(item_id)
        with self._reading() as shards:
            item = None
            for s in shards:
                records = s.edge.retrieve([pid], True, True)
                if records:
                    item = records[0]
                    break
            if item is None:
                return None
            vector = item.vector
            if isinstance(vector, dict):  # named-vector form; the store uses the default vector
                vector = vector[""]
            request = QueryRequest(
                limit=k,
                query=Query.Nearest(vector),
                filter=_build_filter(pid, item.payload or {}, filters),
                with_payload=True,
                with_vector=False,
            )
            best: dict[str, tuple[float, dict[str, Any]]] = {}
            for s in shards:  # rank descending: the newest copy of a duplicated item wins
                for p in s.edge.query(request):
                    payload = p.payload or {}
                    key = str(payload.get("item_id", p.id))
                    if key not in best:
                        best[key] = (p.score, payload)
        ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
        return [Hit(item_id=key, score=score, payload=dict(payload)) for key, (score, payload) in ranked]

    def count(self) -> int:
        with self._reading() as shards:
            return sum(s.edge.info().points_count for s in shards)

    # ------------------------------------------------------------ write path

    def _mutate(self, plan: Callable[[list[_Shard]], tuple[list[_Shard], Callable[[], T]]]) -> T:
        """Run one write: plan on a stable shard set, lock the shards it touches, apply, fsync WAL."""
        while True:
            blocked: _Shard | None = None
            with self._gate.shared():
                if not self._open or self._stopping:
                    raise StoreUnavailableError("the embedded store is closed")
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

    # ------------------------------------------------------------ read path

    @contextlib.contextmanager
    def _reading(self) -> Iterator[list[_Shard]]:
        with self._lock:
            if not self._open:
                raise StoreUnavailableError("the embedded store is closed")
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

    # ------------------------------------------------------------ open / create

    def _check_matches(self, dim: int, model_version: str) -> None:
        if dim == self._dim and model_version == self._model_version:
            return
        raise CollectionMismatch(
            f"collection {self.collection!r} at {self.root} was built with model {self._model_version!r} "
            f"({self._dim}-d vectors), but the loaded model is {model_version!r} ({dim}-d). Point "
            f"LOOKALIKE_MODEL_PATH at the model the collection was built with, or set another "
            f"LOOKALIKE_COLLECTION (or delete {self.root}) and re-index the items with this model."
        )

    def _acquire_dir_lock(self) -> None:
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreUnavailableError(
                f"collection directory {self.root} is open by another store (process or instance)"
            ) from None
        self._lock_fd = fd

    def _release_dir_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def _create_new(self) -> None:
        self._collect_garbage(keep=set())
        name = self._new_name()
        edge = create_plain_shard(self.root / name, self._dim)  # start-up: a GIL hold is harmless here
        hot = _Shard(name=name, path=self.root / name, edge=edge, role="hot", rank=self._next_id)
        self._next_id += 1
        self._write_manifest([(hot, {})])
        self._shards = [hot]
        log.info("created embedded collection %s (dim %d, model %s)", self.root, self._dim, self._model_version)

    def _open_existing(self, manifest: dict[str, Any]) -> None:
        if manifest.get("format") != FORMAT_VERSION:
            raise RuntimeError(f"{self.root / MANIFEST}: unsupported format {manifest.get('format')!r}")
        entries = manifest["shards"]
        self._collect_garbage(keep={e["name"] for e in entries})
        self._next_id = int(manifest["next_id"])
        self._generation = int(manifest["generation"])
        shards = []
        for e in entries:
            path = self.root / e["name"]
            if not path.is_dir():
                raise RuntimeError(f"{self.root / MANIFEST} names {e['name']} but the directory is missing")
            edge = EdgeShard.load(str(path))
            shards.append(
                _Shard(name=e["name"], path=path, edge=edge, role=e["role"], rank=int(e["rank"]), points=e["points"])
            )
        shards.sort(key=lambda s: s.rank, reverse=True)
        if not shards or shards[0].role != "hot":
            raise RuntimeError(f"{self.root / MANIFEST}: the newest shard must be the hot shard")
        self._shards = shards
        log.info("opened embedded collection %s: %s", self.root, [(s.name, s.role) for s in shards])

    def _collect_garbage(self, keep: set[str]) -> None:
        """Remove what a crash left behind: staging dirs, spares, built targets never swapped in."""
        for entry in self.root.iterdir():
            if entry.name in keep or entry.name in (MANIFEST, LOCK_FILE):
                continue
            log.info("removing leftover %s", entry)
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            if entry.exists():  # harmless (never read), but say so: something else writes here
                log.warning("could not remove leftover %s", entry)

    def _new_name(self) -> str:
        name = f"shard-{self._next_id:06d}"
        self._next_id += 1
        return name

    def _write_manifest(self, shards: list[tuple[_Shard, dict[str, Any]]]) -> None:
        """Persist the shard list; `shards` pairs each shard with attribute overrides to record."""
        self._generation += 1
        rows = []
        for s, override in shards:
            row = {"name": s.name, "role": s.role, "rank": s.rank, "points": s.points}
            row.update(override)
            rows.append(row)
        _write_json_atomic(
            self.root / MANIFEST,
            {
                "format": FORMAT_VERSION,
                "dim": self._dim,
                "model_version": self._model_version,
                "generation": self._generation,
                "next_id": self._next_id,
                "shards": sorted(rows, key=lambda r: -r["rank"]),
            },
        )

    # ------------------------------------------------------------ maintenance

    def _tier(self, points: int) -> int:
        tier, bound = 0, self.hot_max * self.merge_fanin
        while points >= bound:
            tier, bound = tier + 1, bound * self.merge_fanin
        return tier

    def _plan_job_locked(self) -> _Job | None:
        frozen = sorted((s for s in self._shards if s.role == "frozen"), key=lambda s: s.rank)
        if frozen:
            return _Job(kind="build", sources=[frozen[0]], target="")
        tiers: dict[int, list[_Shard]] = {}
        for s in self._shards:
            if s.role == "sealed":
                tiers.setdefault(self._tier(s.points), []).append(s)
        for tier in sorted(tiers):
            group = sorted(tiers[tier], key=lambda s: s.rank)[: self.merge_fanin]
            if len(group) == self.merge_fanin and sum(s.points for s in group) <= self.max_shard_points:
                return _Job(kind="merge", sources=group, target="")
        return None

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

    def _spawn(
        self, job: _Job | None, args: list[str], while_pinned: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        """Run an edge_builder command; call `while_pinned(result)` while the child still maps the
        result's files (so that EdgeShard.load finds them in memory), then let the child exit."""
        cmd = [
            sys.executable,
            "-m",
            "app.store.edge_builder",
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
        cwd = Path(__file__).resolve().parents[2]
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


def _build_filter(pid: str, item_payload: dict[str, Any], filters: SimilarFilters) -> Filter:
    must: list[Any] = []
    must_not: list[Any] = [HasIdCondition({pid})]
    if filters.category is not None:
        must.append(FieldCondition("category", match=MatchValue(filters.category)))
    if filters.min_price is not None or filters.max_price is not None:
        must.append(FieldCondition("price", range=RangeFloat(gte=filters.min_price, lte=filters.max_price)))
    if not filters.include_sold:
        must_not.append(FieldCondition("status", match=MatchValue("sold")))
    seller = item_payload.get("seller_id")
    if filters.exclude_same_seller and seller is not None:
        must_not.append(FieldCondition("seller_id", match=MatchValue(seller)))
    return Filter(must=must or None, must_not=must_not)


__all__ = ["EdgeStore"]
