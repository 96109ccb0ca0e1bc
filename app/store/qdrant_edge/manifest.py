"""On-disk layout of an embedded collection: the manifest, shard names, and garbage left by a crash.

`manifest.json` holds dim, model_version, a generation counter and the shard list (name, role, rank,
points). It is replaced atomically (tmp file, fsync, os.replace, fsync dir). Anything in the
collection directory that the manifest does not name is garbage from a crash and is removed on open.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from app.store.qdrant_edge.files import _write_json_atomic
from app.store.qdrant_edge.shard import _Shard

log = logging.getLogger("lookalike.store.edge")

MANIFEST = "manifest.json"
LOCK_FILE = ".lock"
STAGING_PREFIX = "tmp-"
FORMAT_VERSION = 1


def _shard_name(number: int) -> str:
    return f"shard-{number:06d}"


def _read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of the collection at `root`, or None for a new collection."""
    manifest_path = root / MANIFEST
    if not manifest_path.exists():
        return None
    manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
    return manifest


def _write_manifest_file(
    root: Path,
    shards: list[tuple[_Shard, dict[str, Any]]],
    *,
    dim: int,
    model_version: str,
    generation: int,
    next_id: int,
) -> None:
    """Persist the shard list; `shards` pairs each shard with attribute overrides to record."""
    rows = []
    for s, override in shards:
        row = {"name": s.name, "role": s.role, "rank": s.rank, "points": s.points}
        row.update(override)
        rows.append(row)
    _write_json_atomic(
        root / MANIFEST,
        {
            "format": FORMAT_VERSION,
            "dim": dim,
            "model_version": model_version,
            "generation": generation,
            "next_id": next_id,
            "shards": sorted(rows, key=lambda r: -r["rank"]),
        },
    )


def _collect_garbage(root: Path, keep: set[str]) -> None:
    """Remove what a crash left behind: staging dirs, spares, built targets never swapped in."""
    for entry in root.iterdir():
        if entry.name in keep or entry.name in (MANIFEST, LOCK_FILE):
            continue
        log.info("removing leftover %s", entry)
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        if entry.exists():  # harmless (never read), but say so: something else writes here
            log.warning("could not remove leftover %s", entry)
