"""Files of sealed shards read through the page cache, not held in a process's memory.

Sealed shards search an int8 copy of the vectors (mapped, read on every hop of the graph walk) and
re-score their candidates with the float32 originals, which stay on disk (IndexOptions.vectors_on_disk);
a search also reads the payloads of its candidates. Qdrant Edge mmaps both, so every search faults a few
pages of them into the process that searched (with the kernel's fault-around, up to 64 KB per fault), and
a mapped page counts in that process's resident memory until it is unmapped: at 1M x 768 a reader came
to hold the whole 3 GB of originals. The pages themselves live in the kernel's page cache either way,
shared and reclaimable. So

- a reader `prefetch`es a view's originals and payloads into the page cache right after it loads the
  view (posix_fadvise WILLNEED: readahead without mapping anything; a re-score of a page not in the cache
  is a disk read, which costs more than the search). Right after: Qdrant Edge's load() drops a shard's
  files from the page cache (fadvise DONTNEED) but for pages some process maps. And
- a process `release`s its mappings of them (madvise MADV_DONTNEED on a shared file mapping: the pages
  leave the process, stay in the page cache, and the next touch maps them back with a minor fault;
  nothing is lost, dirty pages of a shared mapping stay in the page cache too). A reader releases an
  eighth of its mappings after each answer (all at once took 8-20 ms at 1M, a pause the next request
  would wait for); the serving process, which maps the same files to read query items and write, releases
  them every RELEASE_PERIOD_S from a maintenance thread (`Releaser`).

Only mappings of files whose shard is held open are released: MADV_DONTNEED on an address that is no
longer a file mapping (a closed shard's, reused by the allocator) would zero that memory.

Under memory pressure the kernel may evict these pages; searches then read them from disk (BENCHMARKS.md,
"Catalogue scale": the service's resident memory stays bounded, its latency then does not).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path

log = logging.getLogger("lookalike.store.edge")

# Each of a reader's mappings is released once per RELEASE_PARTS answers: at 1M x 768 a search maps up to
# ~6 MB of originals and payloads, so a reader holds at most ~50 MB of them; a part takes ~1 ms there.
RELEASE_PARTS = 8
RELEASE_PERIOD_S = 1.0  # the serving process: ~1 query item (vector + payload) mapped per GET /similar
MADV_DONTNEED = 4
PREFETCH_WINDOW = 4 << 20  # the kernel reads ahead at most a few MB per advice (8 MB here)
# Qdrant Edge keeps a named vector's float32 rows in `vector_storage-<name>/vectors/chunk_N.mmap` and the
# payloads in `payload_storage/page_N.dat`. The int8 copy (`quantized.data`), the graph and the payload
# indexes are read on every search: they stay mapped.
RELEASED = ("/vectors/chunk_", "/payload_storage/page_")
PREFETCH_GLOBS = ("segments/*/vector_storage*/vectors/chunk_*.mmap", "segments/*/payload_storage/page_*.dat")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def files(shard: Path) -> list[Path]:
    """The originals' and payloads' files of a shard folder (or of a view of one)."""
    return sorted(p for pattern in PREFETCH_GLOBS for p in shard.glob(pattern))


def prefetch(shard: Path) -> None:
    """Ask the kernel to read `shard`'s originals and payloads into the page cache (readahead, no mapping)."""
    for path in files(shard):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # a view dropped meanwhile: nothing to warm
        try:
            size = os.fstat(fd).st_size
            for offset in range(0, size, PREFETCH_WINDOW):
                os.posix_fadvise(fd, offset, PREFETCH_WINDOW, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)


def mapped(under: Iterable[Path]) -> list[tuple[int, int]]:
    """(start, length) of this process's mappings of released files below any of the folders `under`."""
    prefixes = tuple(str(p.resolve()) + "/" for p in under)
    if not prefixes:
        return []
    ranges = []
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) < 6:
                continue
            path = fields[5].rstrip("\n")
            if path.startswith(prefixes) and any(part in path for part in RELEASED):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((start, end - start))
    return ranges


def release(ranges: list[tuple[int, int]]) -> bool:
    """Unmap the pages of these mappings (from `mapped`) from this process; they stay in the page cache.
    False when one is no longer mapped: the caller reads `mapped` again."""
    for start, length in ranges:
        if _libc.madvise(start, length, MADV_DONTNEED) != 0:
            log.info("madvise(DONTNEED) of a shard file's mapping failed (errno %d): re-reading", ctypes.get_errno())
            return False
    return True


class Releaser:
    """The serving process's side: every RELEASE_PERIOD_S, release the mappings of the folders `held` yields
    (sealed shards it holds open for the duration of the call: `held` is a context manager factory)."""

    def __init__(self, held: Callable[[], AbstractContextManager[list[Path]]], name: str) -> None:
        self._held = held
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"edge-release-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(RELEASE_PERIOD_S):
            try:
                with self._held() as folders:
                    release(mapped(folders))
            except Exception:  # a closed store, a vanished folder: try again next period
                log.debug("releasing shard file mappings failed", exc_info=True)
