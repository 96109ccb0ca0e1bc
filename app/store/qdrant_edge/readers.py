"""Reader processes of the embedded store: the HNSW searches of sealed shards on every core.

Qdrant Edge holds the GIL during `query_batch`, so one process searches on one core. A second process
cannot load a shard directory the server holds (the WAL lock), but the same segment files hardlinked
into another directory with an empty WAL load fine. So each sealed shard gets a *view*,
`readers/<shard>/` (segments hardlinked by one `cp -al` child, config copied, empty WAL), made when
the shard's files are exactly what its builder flushed (before the swap's replay) or, at open, right
after a flush. `edge_read_workers` children (`python -m app.store.qdrant_edge.reader`) load views on
first use and answer search batches over a socket; the request thread waits in a GIL-free recv.

Read-your-writes: sealed shards take deletes, payload patches and set_vector after their view was
made (and a swap replays the writes made during its job). Every such point id is in the shard's
`touched` set (writes.py, jobs.py). A search sent to a reader excludes those ids, and the server
searches them itself in its own shard (a has-id filter: small and exact), so nothing a view has
stale is ever returned. A shard with many touched points is searched in-process. A reader that
dies is restarted and its search is answered in-process: a crash never fails a request.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from app.store.qdrant_edge.builder import IndexOptions, vector_names
from app.store.qdrant_edge.files import remove_dir
from app.store.qdrant_edge.shard import Shard

log = logging.getLogger("lookalike.store.edge")

READER_MODULE = "app.store.qdrant_edge.reader"
READERS_DIR = "readers"  # under the collection root; not in the manifest, so open removes crash leftovers
# A shard with more touched points than this (or than this fraction of its points) is searched
# in-process: the has-id searches would cost more than the offload saves.
MAX_TOUCHED = 2_000
MAX_TOUCHED_FRACTION = 0.05


def default_workers() -> int:
    # One reader per core: with one fewer, the lone reader of a 2-core machine was the bottleneck at 1M
    # (c=8: 137-145 rps with one reader, 188 with two; BENCHMARKS.md "Catalogue scale"); the serving
    # process's HTTP and re-rank take turns with them on the cores. A reader costs ~100 MB of its own.
    return max(1, os.cpu_count() or 1)


@dataclass
class View:
    """A sealed shard's hardlinked copy that readers load; `vectors`: the named vectors it serves."""

    path: Path
    vectors: set[str]


@dataclass(eq=False)
class Child:
    slot: int  # which copy of each view it loads: one process per shard directory (the WAL lock)
    proc: subprocess.Popen[bytes]
    conn: Connection
    drops: list[str] = field(default_factory=list)  # views to close before its next search


class Pending:
    """A request sent to one reader; `wait()` gives its answer, or None (search in-process instead)."""

    def __init__(self, pool: ReaderPool, child: Child) -> None:
        self.pool, self.child = pool, child

    def wait(self) -> list[Any] | None:
        try:
            status, answer = pickle.loads(self.child.conn.recv_bytes())  # blocking recv: the GIL is free
        except (EOFError, OSError):
            self.pool.replace(self.child)
            return None
        self.pool.release(self.child)
        if status == "ok":
            self.pool.served += len(answer)
        else:
            log.warning("edge reader %d failed a search (answered in-process): %s", self.child.proc.pid, answer)
            return None
        return answer


class ReaderPool:
    """`workers` reader children, their views, and a queue of idle ones."""

    def __init__(self, root: Path, workers: int, env: dict[str, str], index: IndexOptions) -> None:
        self.dir = root / READERS_DIR
        self.workers = workers
        self._env = env
        self._index = index  # the children search with the same hnsw_ef and re-score as this process
        self._lock = threading.Lock()
        self._views: dict[str, View] = {}
        self._children: list[Child] = []
        self._idle: queue.SimpleQueue[Child] = queue.SimpleQueue()
        self._open = False
        self.served = 0  # shard searches answered by readers (tests, stats)

    def start(self, sealed: list[Shard]) -> None:
        """Remove crash leftovers, start the children (none when workers is 0) and link a view of each
        `sealed` shard. Start-up only: flush() holds the GIL; it puts what the WAL holds into the segment
        files the view links (the view's WAL is empty)."""
        if not self.workers:
            return
        remove_dir(self.dir)
        self.dir.mkdir(parents=True)
        with self._lock:
            self._open = True
            for slot in range(self.workers):
                self._idle.put(self._spawn(slot))
        for s in sealed:
            s.edge.flush()
            self.link(s.name, s.path)

    def _spawn(self, slot: int) -> Child:
        ours, theirs = socket.socketpair()
        cmd = [sys.executable, "-m", READER_MODULE, "--fd", str(theirs.fileno()), "--slot", str(slot)]
        cmd += ["--parent-pid", str(os.getpid()), "--index", self._index.to_json()]
        try:
            proc = subprocess.Popen(cmd, pass_fds=(theirs.fileno(),), env=self._env, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        child = Child(slot, proc, Connection(ours.detach()))
        self._children.append(child)
        return child

    # ------------------------------------------------------------ views

    def link(self, name: str, shard_dir: Path) -> None:
        """Make `shard_dir`'s view, one copy per reader slot `<view>/<slot>/`: its segment files hardlinked,
        its config copied, an empty WAL; all in one child (a Python walk would retake the GIL per file)."""
        if not self._open:
            return
        view = self.dir / name
        remove_dir(view)
        script = (
            'src=$1; shift; for d in "$@"; do mkdir -p "$d" && cp -al "$src/segments" "$d/segments"'
            ' && cp "$src/edge_config.json" "$d/" && mkdir "$d/wal" || exit 1; done'
        )
        slots = [str(view / str(slot)) for slot in range(self.workers)]
        subprocess.run(["sh", "-c", script, "link", str(shard_dir), *slots], check=True, capture_output=True)
        with self._lock:
            self._views[name] = View(view, set(vector_names(shard_dir)))

    def forget_vector(self, name: str, vector: str) -> None:
        """A named vector of shard `name` was created or deleted in place: its view no longer serves it."""
        with self._lock:
            if name in self._views:
                self._views[name].vectors.discard(vector)

    def drop(self, name: str) -> None:
        """The shard is retired (no search of it is in flight): remove its view; readers close it later
        (their mappings keep the unlinked files alive until then)."""
        with self._lock:
            view = self._views.pop(name, None)
            for child in self._children:
                child.drops.append(name)
        if view is not None:
            remove_dir(view.path)

    def view(self, name: str, using: str, points: int, touched: int) -> Path | None:
        """The view of shard `name` a search of `using` may use, or None (search in-process)."""
        if touched > MAX_TOUCHED or touched > MAX_TOUCHED_FRACTION * max(points, 1):
            return None
        with self._lock:
            view = self._views.get(name) if self._open else None
        return view.path if view is not None and using in view.vectors else None

    # ------------------------------------------------------------ searches

    def submit(self, searches: list[Any]) -> Pending | None:
        """Send `searches` (reader.ShardSearch rows) to an idle reader (waiting for one); None if closed."""
        while True:
            child = self._idle.get()  # blocking: the GIL is free
            with self._lock:
                if not self._open:
                    self._idle.put(child)
                    return None
                drops, child.drops = child.drops, []
            try:
                child.conn.send_bytes(pickle.dumps((drops, searches), protocol=pickle.HIGHEST_PROTOCOL))
            except OSError:
                self.replace(child)
                continue
            return Pending(self, child)

    def release(self, child: Child) -> None:
        self._idle.put(child)

    def replace(self, child: Child) -> None:
        """A reader died (EOF): reap it and start another in its place."""
        log.warning("edge reader %d died (exit %s); starting another", child.proc.pid, child.proc.poll())
        child.conn.close()
        child.proc.kill()
        child.proc.wait()
        with self._lock:
            if child in self._children:
                self._children.remove(child)
            if not self._open:
                return
            fresh = self._spawn(child.slot)
        self._idle.put(fresh)

    def pids(self) -> list[int]:
        with self._lock:
            return [c.proc.pid for c in self._children]

    def close(self) -> None:
        """Stop every reader (EOF on its socket, then SIGKILL after 2 s) and remove the views."""
        with self._lock:
            self._open = False
            children, self._children = self._children, []
            self._views.clear()
        for child in children:
            child.conn.close()
        for child in children:
            try:
                child.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
        if self.workers:
            remove_dir(self.dir)
