"""On-disk layout of an embedded collection: the manifest, shard names, and garbage left by a crash.

`manifest.json` holds the model versions (name, state, dim, named vector; see app/store/versions.py), a
generation counter, the next shard number and the shard list (name, role, rank, points). Format 1
(before versions: one `dim` and `model_version`) is read as that one serving version on the unnamed
vector "" and written as format 2 at the next manifest write. `meta.json` keeps get_meta/put_meta
documents. It is replaced atomically (tmp file, fsync, os.replace, fsync dir).
Anything in the collection directory that the manifest does not name is garbage from a crash and is
removed on open.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.store.qdrant_edge.files import write_json_atomic
from app.store.versions import StoredVersion

log = logging.getLogger("lookalike.store.edge")

MANIFEST = "manifest.json"
LOCK_FILE = ".lock"
META_FILE = "meta.json"
STAGING_PREFIX = "tmp-"
FORMAT_VERSION = 2
LEGACY_FORMAT = 1  # one dim + model_version, the unnamed vector


@dataclass(frozen=True)
class ShardRecord:
    """One row of the manifest's shard list."""

    name: str
    role: str  # "hot" | "frozen" | "sealed"
    rank: int  # data age: higher is newer
    points: int = 0  # recorded when the shard was frozen or built (size tiers)


def shard_name(number: int) -> str:
    return f"shard-{number:06d}"


class Manifest:
    """The manifest of the collection at `root` and the counters it persists.

    Thread-safe: shard numbers are handed out and the file is written under one internal lock.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / MANIFEST
        self.versions: list[StoredVersion] = []  # replaced as a whole (readers take a reference, no lock)
        self.generation = 0
        self._next_id = 1  # next shard number; ranks are drawn from the same counter
        self._lock = threading.Lock()

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> list[ShardRecord]:
        """Read the manifest (the collection must exist): sets the versions and the counters."""
        data: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        fmt = data.get("format")
        if fmt == FORMAT_VERSION:
            versions = [StoredVersion.from_json(row) for row in data["versions"]]
        elif fmt == LEGACY_FORMAT:
            versions = [StoredVersion(str(data["model_version"]), "serving", int(data["dim"]), "")]
        else:
            raise RuntimeError(f"{self.path}: unsupported format {fmt!r}")
        with self._lock:
            self.versions = versions
            self.generation = int(data["generation"])
            self._next_id = int(data["next_id"])
        return [
            ShardRecord(name=str(e["name"]), role=str(e["role"]), rank=int(e["rank"]), points=int(e["points"]))
            for e in data["shards"]
        ]

    def vector_dims(self) -> dict[str, int]:
        """{named vector: dim} of the active versions: the vectors every shard has."""
        return {v.vector: v.dim for v in self.versions if v.active}

    def take_number(self) -> int:
        """A number never used before in this collection (shard names and ranks)."""
        with self._lock:
            number = self._next_id
            self._next_id += 1
            return number

    def new_name(self) -> str:
        return shard_name(self.take_number())

    def write(self, shards: list[ShardRecord]) -> None:
        """Persist `shards` as the collection's shard list (atomically), with a new generation."""
        with self._lock:
            self.generation += 1
            rows = [{"name": s.name, "role": s.role, "rank": s.rank, "points": s.points} for s in shards]
            write_json_atomic(
                self.path,
                {
                    "format": FORMAT_VERSION,
                    "versions": [v.to_json() for v in self.versions],
                    "generation": self.generation,
                    "next_id": self._next_id,
                    "shards": sorted(rows, key=lambda r: -r["rank"]),
                },
            )

    def collect_garbage(self, keep: set[str]) -> list[str]:
        """Remove what a crash left behind (staging dirs, spares, built targets never swapped in): every
        entry of the collection directory but the manifest, the lock file and the shards in `keep`.
        Returns the names removed."""
        removed = []
        for entry in self.root.iterdir():
            if entry.name in keep or entry.name in (MANIFEST, LOCK_FILE, META_FILE):
                continue
            log.info("removing leftover %s", entry)
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            if entry.exists():  # harmless (never read), but say so: something else writes here
                log.warning("could not remove leftover %s", entry)
            removed.append(entry.name)
        return sorted(removed)
