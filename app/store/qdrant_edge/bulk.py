"""Bulk load of the embedded store: a large first load with each vector indexed once (see "Bulk load" in
__init__.py).

Rows are streamed into a staging folder `tmp-bulk-<n>/` (staging.py), `shard_points` at a time. Each
full folder (and the last one) is built by a niced `python -m app.store.qdrant_edge.builder bulk --hold`
child into one sealed shard (one optimize()), loaded while the child still maps it, and swapped in under
the exclusive write gate like a job's result, with the newest rank of the sealed shards (the hot shard
is re-ranked above it: it stays the newest); then older copies of its items are deleted from the other
shards (upsert semantics). Reads, writes and maintenance go on meanwhile.

A live write of an item that the load also holds, made before that item's shard is swapped in, is
replaced by the load's copy: the load's shard is the newest when it is swapped in.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_edge import UpdateOperation

from app.core.errors import SinglePhotoVersion, StoreUnavailable
from app.store.base import VersionsChanged, payload_point_id
from app.store.qdrant_edge.files import remove_dir
from app.store.qdrant_edge.jobs import JobRunner, load_built, move_into_place
from app.store.qdrant_edge.manifest import STAGING_PREFIX, shard_name
from app.store.qdrant_edge.planning import JobAborted
from app.store.qdrant_edge.shard import Shard
from app.store.qdrant_edge.staging import StagingWriter
from app.store.qdrant_edge.state import StoreState
from app.store.qdrant_edge.writes import ShardWriter
from app.store.versions import StoredVersion, photo_rows, vectors_by_name

log = logging.getLogger("lookalike.store.edge")

# One row: the payload as the service stores an item (with "item_id"), and one listing's photo vectors
# ([photos, dim], or [dim] for one photo) keyed by model version, every active version present.
BulkRow = tuple[dict[str, Any], Mapping[str, np.ndarray]]

PROGRESS_EVERY = 1000  # rows between two progress calls (and one at the end of each shard)
LOOKUP_PAGE = 10_000  # point ids per retrieve() when looking for older copies


@dataclass(frozen=True)
class BulkReport:
    items: int  # rows loaded
    shards: int  # sealed shards built
    points_built: int  # points that passed through an HNSW build in this load (== items)
    seconds: float


def staged_row(versions: list[StoredVersion], n: int, row: BulkRow) -> tuple[str, str, dict[str, np.ndarray]]:
    """Check row `n` like an upsert checks its items -> (point id, payload JSON, {vector name: rows [P, dim]})."""
    try:
        payload, vectors = row
        pid = payload_point_id(payload)
        if not isinstance(vectors, Mapping):
            raise ValueError("vectors must be a mapping {model version: photo vectors}")
        by_name = vectors_by_name(versions, 1, {v: [photo_rows(a)] for v, a in vectors.items()})
        return pid, json.dumps(payload), {name: rows[0] for name, rows in by_name.items()}
    except (ValueError, TypeError, AttributeError, VersionsChanged, SinglePhotoVersion) as e:
        raise ValueError(f"bulk load row {n}: {e}") from e


class BulkLoader:
    """Runs bulk loads on an open store's parts (one at a time per caller; see the module docstring)."""

    def __init__(self, state: StoreState, runner: JobRunner, writer: ShardWriter, wake: Callable[[], None]) -> None:
        self.state = state
        self.runner = runner
        self.writer = writer
        self.wake = wake  # maintenance re-plans (the new shards may merge)

    def load(
        self,
        rows: Iterable[BulkRow],
        shard_points: int | None,
        progress: Callable[[int], None] | None,
        committed: Callable[[int], None] | None = None,
    ) -> BulkReport:
        """Stage, build and swap in `shard_points` rows at a time; `progress(rows staged)` as rows go,
        `committed(rows)` once each shard is in (a caller notes where a re-run may resume)."""
        state = self.state
        per_shard = shard_points if shard_points is not None else state.config.bulk_shard_points
        if per_shard < 1:
            raise ValueError("shard_points must be >= 1")
        t0 = time.perf_counter()
        done = shards = built = 0
        chunk = iter(rows)
        reported = [0]

        def report(n: int) -> None:  # rows staged; never the same count twice
            if progress is not None and n != reported[0]:
                reported[0] = n
                progress(n)

        while True:
            if not state.open or state.stopping:
                raise StoreUnavailable("the embedded store is not open")
            number = state.manifest.take_number()
            staging = state.config.root / f"{STAGING_PREFIX}bulk-{number}"
            versions = state.manifest.versions  # one snapshot per shard: checks and staged vectors agree
            try:
                writer = StagingWriter(staging, {v.vector: v.dim for v in versions if v.active})
                pids = self._stage(writer, versions, chunk, per_shard, done, report)
                if not pids:
                    break
                built += self._build_and_swap(staging, shard_name(number), pids)
            finally:
                remove_dir(staging)
            done += len(pids)
            shards += 1
            report(done)
            if committed is not None:
                committed(done)
            if len(pids) < per_shard:
                break
        return BulkReport(items=done, shards=shards, points_built=built, seconds=time.perf_counter() - t0)

    def _stage(
        self,
        writer: StagingWriter,
        versions: list[StoredVersion],
        rows: Iterable[BulkRow],
        limit: int,
        done: int,
        report: Callable[[int], None],
    ) -> list[str]:
        """Stage up to `limit` rows; returns their point ids (the ones to delete from older shards)."""
        pids: list[str] = []
        try:
            for n, row in enumerate(rows, start=done):
                pid, payload_json, vectors = staged_row(versions, n, row)
                writer.add(pid, payload_json, vectors)
                pids.append(pid)
                if (n + 1) % PROGRESS_EVERY == 0:
                    report(n + 1)
                if len(pids) == limit:
                    break
        finally:
            writer.close()
        return pids

    def _build_and_swap(self, staging: Path, name: str, pids: list[str]) -> int:
        """Build the staged points into shard `name`, swap it in; returns the points built."""
        state = self.state
        final = state.config.root / name
        target: Shard | None = None
        load_ms = 0.0

        def load(result: dict[str, Any]) -> None:
            nonlocal target, load_ms
            move_into_place(staging / name, final)
            if self.state.readers is not None:  # now, while its files are exactly what the builder flushed
                self.state.readers.link(name, final)
            edge, load_ms = load_built(final)
            target = Shard(name=name, path=final, edge=edge, role="sealed", rank=0, points=int(result["points"]))

        try:
            result = self.runner.spawn(None, ["bulk", "--target", str(staging / name), "--input", str(staging)], load)
            assert target is not None
            replaced = self._swap(target, pids)
        except JobAborted as e:
            raise StoreUnavailable("the embedded store closed during a bulk load") from e
        finally:
            if target is not None and target not in state.shards:
                target.close()
            if final.exists() and (target is None or target not in state.shards):
                remove_dir(final)
        points_built = int(result["upserted"])
        with state.cond:
            state.counters["points_built"] += points_built
        self.wake()
        log.info(
            "bulk load: %s built (%d points; build %.1f s, optimize %.1f s, load %.0f ms; %d older copies deleted)",
            name,
            target.points,
            result["copy_s"] + result["optimize_s"],
            result["optimize_s"],
            load_ms,
            replaced,
        )
        return points_built

    def _swap(self, target: Shard, pids: list[str]) -> int:
        """Publish `target` as the newest sealed shard, then delete older copies of its points from the
        other shards (written first, removed second: a crash in between leaves duplicates that reads resolve
        by rank) and drop the sealed shards that this empties (a re-load); returns the copies deleted."""
        state = self.state
        with state.gate.exclusive():
            if state.stopping:
                raise JobAborted
            with state.cond:
                target.rank = state.manifest.take_number()
                state.shards[0].rank = state.manifest.take_number()  # the hot shard stays the newest
            self.runner.install([], target, [])
            replaced, emptied = self._delete_older(target, pids)
            emptied = self.runner.shard_set.drop_idle(emptied)
        if emptied:
            self.runner.shard_set.dispose(emptied)
            log.info("bulk load: dropped %s, emptied by newer copies", [s.name for s in emptied])
        return replaced

    def _delete_older(self, target: Shard, pids: list[str]) -> tuple[int, list[Shard]]:
        """Delete the points `pids` from every shard but `target` (the caller holds the gate exclusively);
        returns how many were deleted and the sealed shards left empty."""
        state = self.state
        replaced, emptied = 0, []
        for s in state.shards:
            if s is target:
                continue
            with s.lock:  # a job may be copying it (the deletes are recorded for its replay)
                found = [
                    str(r.id)
                    for i in range(0, len(pids), LOOKUP_PAGE)
                    for r in s.edge.retrieve(pids[i : i + LOOKUP_PAGE], False, False)
                ]
                if not found:
                    continue
                self.writer.apply(s, UpdateOperation.delete_points(found), None)
                s.wal.sync()
                replaced += len(found)
                if s.role == "sealed" and s.edge.info().points_count == 0:
                    emptied.append(s)
        return replaced, emptied
