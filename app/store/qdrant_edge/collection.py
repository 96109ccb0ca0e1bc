"""Opening an embedded collection: check its model versions against the model files, clear crash
leftovers, load its shards (or create the first hot shard of a new collection) and give every shard
exactly the named vectors of the active versions."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from app.store.qdrant_edge.builder import create_plain_shard
from app.store.qdrant_edge.manifest import Manifest
from app.store.qdrant_edge.shard import Shard
from app.store.versions import open_versions

log = logging.getLogger("lookalike.store.edge")


def open_collection(manifest: Manifest, collection: str, models: Mapping[str, int]) -> list[Shard]:
    """The shards of the collection at `manifest.root` (rank descending), created if it is new.

    Raises CollectionMismatch (see app/store/versions.py). The caller holds the collection's directory
    lock. Start-up only: loading and creating shards hold the GIL, which nothing else needs yet.
    """
    root = manifest.root
    where = f"{collection!r} at {root}"
    if not manifest.exists():
        manifest.versions, _ = open_versions(None, models, where)
        manifest.collect_garbage(keep=set())
        name = manifest.new_name()
        edge = create_plain_shard(root / name, manifest.vector_dims())
        hot = Shard(name=name, path=root / name, edge=edge, role="hot", rank=0)
        hot.rank = manifest.take_number()
        manifest.write([hot.record()])
        log.info("created embedded collection %s (versions %s)", root, manifest.vector_dims())
        return [hot]
    records = manifest.load()
    manifest.versions, added = open_versions(manifest.versions, models, where)
    manifest.collect_garbage(keep={r.name for r in records})
    shards = sorted((Shard.load(root, r) for r in records), key=lambda s: s.rank, reverse=True)
    if not shards or shards[0].role != "hot":
        raise RuntimeError(f"{manifest.path}: the newest shard must be the hot shard")
    # Every shard gets exactly the active vectors: new versions are added here, and this also repairs a
    # crash between changing the shards' vectors and writing the manifest (or the other way round).
    wanted = manifest.vector_dims()
    for s in shards:
        for op in s.vector_changes(wanted):
            s.edge.update(op)
        s.wal.sync()
    if added:
        manifest.write([s.record() for s in shards])  # after the shards: a crash in between is repaired above
        log.info("added model versions %s to %s", [v.model_version for v in added], root)
    log.info("opened embedded collection %s: %s", root, [(s.name, s.role) for s in shards])
    return shards
