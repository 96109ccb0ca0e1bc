"""Maintenance jobs of the embedded store: the job record and the choice of the next job.

A build job turns the oldest frozen shard into a sealed (HNSW-indexed) one; builds go first. A merge
job joins `merge_fanin` sealed shards of one size tier (tier t holds sizes in
[hot_max * fanin^t, hot_max * fanin^(t+1))) into one, never producing more than `max_shard_points`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qdrant_edge import UpdateOperation

from app.store.qdrant_edge.shard import _Shard

# Hook signature for tests: (phase, job info). Phases: "copied", "spawned", "built".
MaintenanceHook = Callable[[str, dict[str, Any]], None]


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


def _tier(points: int, hot_max: int, merge_fanin: int) -> int:
    tier, bound = 0, hot_max * merge_fanin
    while points >= bound:
        tier, bound = tier + 1, bound * merge_fanin
    return tier


def _plan_job(shards: list[_Shard], *, hot_max: int, merge_fanin: int, max_shard_points: int) -> _Job | None:
    """The next job for this shard list (target not named yet), or None when nothing is to do."""
    frozen = sorted((s for s in shards if s.role == "frozen"), key=lambda s: s.rank)
    if frozen:
        return _Job(kind="build", sources=[frozen[0]], target="")
    tiers: dict[int, list[_Shard]] = {}
    for s in shards:
        if s.role == "sealed":
            tiers.setdefault(_tier(s.points, hot_max, merge_fanin), []).append(s)
    for tier in sorted(tiers):
        group = sorted(tiers[tier], key=lambda s: s.rank)[:merge_fanin]
        if len(group) == merge_fanin and sum(s.points for s in group) <= max_shard_points:
            return _Job(kind="merge", sources=group, target="")
    return None
