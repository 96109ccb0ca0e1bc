"""Maintenance jobs of the embedded store: the job record and the choice of the next job.

A build job turns the oldest frozen shard into a sealed (HNSW-indexed) one; builds go first. A merge
job joins `merge_fanin` sealed shards of one size tier (tier t holds sizes in
[hot_max * fanin^t, hot_max * fanin^(t+1))) into one, never producing more than `max_shard_points`.
A reseal job rebuilds one sealed shard that a backfill rewrote much of (each `set_vector` moves the
point out of the indexed segments into the shard's plain segment, which is searched brute force).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from qdrant_edge import UpdateOperation

from app.store.qdrant_edge.shard import Shard

# Hook signature for tests: (phase, job info). Phases: "copied", "spawned", "built".
MaintenanceHook = Callable[[str, dict[str, Any]], None]


class Planned(Protocol):
    """What planning reads of a shard (a Shard or a manifest ShardRecord)."""

    @property
    def role(self) -> str: ...

    @property
    def rank(self) -> int: ...

    @property
    def points(self) -> int: ...


S = TypeVar("S", bound=Planned)


@dataclass(eq=False)
class Job:
    kind: str  # "build" | "merge" | "reseal"
    sources: list[Shard]
    target: str
    recording: bool = False
    # (point id whose existence the op needs, or None; the op; the named vector (name, dim) the op
    # creates or deletes, or None), in application order
    ops: list[tuple[str | None, UpdateOperation, tuple[str, int] | None]] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)  # the point ids of `ops`: the target's view lacks them
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


class JobAborted(Exception):
    """The store is closing: the job (or spare) was abandoned; nothing was swapped in."""


def tier(points: int, hot_max: int, merge_fanin: int) -> int:
    t, bound = 0, hot_max * merge_fanin
    while points >= bound:
        t, bound = t + 1, bound * merge_fanin
    return t


# A sealed shard is rebuilt once this share of its points got a vector written in place (set_vector).
RESEAL_FRACTION = 0.25


def plan_job(
    shards: Sequence[S],
    *,
    hot_max: int,
    merge_fanin: int,
    max_shard_points: int,
    rewritten: Callable[[S], int] = lambda s: 0,
) -> tuple[str, list[S]] | None:
    """The next job for this shard list as (kind, sources), or None when nothing is to do.

    `rewritten`: how many points of a shard got a vector written in place since it was built."""
    frozen = sorted((s for s in shards if s.role == "frozen"), key=lambda s: s.rank)
    if frozen:
        return "build", [frozen[0]]
    tiers: dict[int, list[S]] = {}
    for s in shards:
        if s.role == "sealed":
            tiers.setdefault(tier(s.points, hot_max, merge_fanin), []).append(s)
    for t in sorted(tiers):
        group = sorted(tiers[t], key=lambda s: s.rank)[:merge_fanin]
        if len(group) == merge_fanin and sum(s.points for s in group) <= max_shard_points:
            return "merge", group
    worn = [s for s in shards if s.role == "sealed" and rewritten(s) >= max(1.0, RESEAL_FRACTION * s.points)]
    if worn:
        return "reseal", [max(worn, key=lambda s: rewritten(s) / max(1, s.points))]
    return None
