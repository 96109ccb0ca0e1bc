"""The shard list of an open store, as readers see it (see "Concurrency" in __init__.py).

Readers take `StoreState.cond` only to copy the list and bump the reference count of each shard, then
query outside any lock. A shard taken out of the list (by a swap) is retired: it is closed and deleted
once its last reader is gone.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from app.core.errors import StoreUnavailable
from app.store.qdrant_edge.files import remove_dir, write_back
from app.store.qdrant_edge.shard import Shard, gil_hold
from app.store.qdrant_edge.state import StoreState

log = logging.getLogger("lookalike.store.edge")


class ShardSet:
    """Reference-counted snapshots of `state.shards` for readers; swaps and retirement for maintenance."""

    def __init__(self, state: StoreState) -> None:
        self.state = state

    def install(self, shards: list[Shard]) -> None:
        """Make `shards` (rank descending) the open store's list."""
        with self.state.cond:
            self.state.shards = sorted(shards, key=lambda s: s.rank, reverse=True)
            self.state.open = True

    @contextlib.contextmanager
    def reading(self) -> Iterator[list[Shard]]:
        """A snapshot of the shard list (hot first); none of its shards is closed until it is left."""
        with self.state.cond:
            if not self.state.open:
                raise StoreUnavailable("the embedded store is closed")
            shards = list(self.state.shards)
            for s in shards:
                s.readers += 1
        try:
            yield shards
        finally:
            with self.state.cond:
                for s in shards:
                    s.readers -= 1
                if any(s.retired for s in shards):
                    self.state.cond.notify_all()

    @contextlib.contextmanager
    def sealed_folders(self) -> Iterator[list[Path]]:
        """The folders of the sealed shards, none of them closed until this is left (page_cache.Releaser)."""
        with self.reading() as shards:
            yield [s.path for s in shards if s.role == "sealed"]

    def swap(self, sources: list[Shard], target: Shard) -> list[Shard]:
        """The list with `target` in place of `sources` (to persist first, then `publish`)."""
        gone = set(sources)
        remaining = [s for s in self.state.shards if s not in gone]
        return sorted([*remaining, target], key=lambda s: s.rank, reverse=True)

    def publish(self, shards: list[Shard], retired: list[Shard]) -> None:
        """Make `shards` the list readers see; `retired` shards are closed after their last reader."""
        with self.state.cond:
            self.state.shards = shards
            for s in retired:
                s.retired = True
            self.state.cond.notify_all()

    def drop_idle(self, shards: list[Shard]) -> list[Shard]:
        """Take `shards` out of the list (persisted first; retired) but those the running job rebuilds (its
        swap retires them); returns the ones taken out. The caller holds the write gate exclusively.

        Under `cond` from the check to the publish, so that no job is planned on a shard being dropped; the
        manifest write (an fsync) holds readers for that long, which only a re-load's emptied shards cost."""
        with self.state.cond:
            busy = self.state.job.sources if self.state.job is not None else []
            gone = [s for s in shards if s not in busy]
            if gone:
                remaining = [s for s in self.state.shards if s not in gone]
                self.state.manifest.write([s.record() for s in remaining])
                self.state.shards = remaining
                for s in gone:
                    s.retired = True
                self.state.cond.notify_all()
        return gone

    def wait_unread(self, shards: list[Shard], timeout_s: float | None = None) -> bool:
        """Wait until no reader holds any of `shards`; False if `timeout_s` ran out first."""
        with self.state.cond:
            return self._wait_unread_locked(shards, timeout_s)

    def _wait_unread_locked(self, shards: list[Shard], timeout_s: float | None) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while any(s.readers for s in shards):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self.state.cond.wait(remaining)
        return True

    def dispose(self, shards: list[Shard]) -> None:
        """Close and delete retired shards once their readers are gone, one GIL hold at a time."""
        self.wait_unread(shards)
        if self.state.readers is not None:
            for s in shards:
                self.state.readers.drop(s.name)  # no search of it is in flight any more
        write_back()  # close() flushes under the GIL; make that flush find nothing to do
        for i, s in enumerate(shards):
            if i:
                time.sleep(0.2)  # request threads run between two closes
            with gil_hold(f"close of {s.name}"):
                s.close()
            remove_dir(s.path)

    def close_all(self, timeout_s: float) -> None:
        """Close the store's shards (and the spare): readers get StoreUnavailable from now on;
        the ones already querying get `timeout_s` to finish. The caller holds the write gate."""
        with self.state.cond:
            self.state.open = False
            shards = list(self.state.shards)
            if self.state.spare is not None:
                shards.append(self.state.spare)
            if not self._wait_unread_locked(shards, timeout_s):
                log.warning("closing shards with readers still active")
            self.state.shards, self.state.spare = [], None
        write_back()
        for s in shards:
            s.edge.flush()
            s.close()
