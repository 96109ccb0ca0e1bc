"""File helpers of the embedded store: fsync, atomic JSON writes, bulk copies and removals, the WAL
syncer and the collection directory lock.

Every Python-level syscall releases and re-takes the GIL, and re-taking it costs up to the switch
interval (5 ms) while request threads are busy. A directory walk with an fsync per file is thousands
of such round trips (a small swap stalled for seconds under a closed-loop reader:
BENCHMARKS.md, "Index maintenance"). So bulk file
work is one call each: os.sync(), or `cp`/`rm` in a child process that the thread just waits on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

from app.core.errors import StoreUnavailable


def fsync_path(path: Path, *, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_back() -> None:
    """Write back all dirty pages (shard mmaps included) in one GIL-free call.

    The engine's flush()/close() msync and fsync under the GIL; after this they find nothing to write.
    """
    os.sync()


def copy_dir(src: Path, dst: Path, attempts: int = 3) -> None:
    for attempt in range(attempts):
        done = subprocess.run(["cp", "-a", "--", str(src), str(dst)], capture_output=True, text=True)
        if done.returncode == 0:
            return
        # The WAL preallocates its next segment in a background thread (tmp-open-N, then renamed);
        # a file renamed between cp's listing and its open fails the copy. Start over.
        remove_dir(dst)
        if attempt == attempts - 1:
            raise RuntimeError(f"copying {src} failed: {done.stderr.strip()}")


def remove_dir(path: Path) -> None:
    subprocess.run(["rm", "-rf", "--", str(path)], check=True, capture_output=True)


class WalSyncer:
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
                fsync_path(self._dir, directory=True)  # the segment set changed: persist the names
            for fd in self._fds.values():
                os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent, directory=True)


class DirLock:
    """An exclusive flock on `directory/name`: one open store per collection directory."""

    def __init__(self, directory: Path, name: str) -> None:
        self.path = directory / name
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreUnavailable(
                f"collection directory {self.path.parent} is open by another store (process or instance)"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON document written by write_json_atomic; {} when there is none yet."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
