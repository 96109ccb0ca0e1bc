"""Opening an embedded collection: check it matches the model, clear crash leftovers, load its shards
(or create the first hot shard of a new collection)."""

from __future__ import annotations

import logging

from app.store.base import CollectionMismatch
from app.store.qdrant_edge.builder import create_plain_shard
from app.store.qdrant_edge.manifest import Manifest
from app.store.qdrant_edge.shard import Shard

log = logging.getLogger("lookalike.store.edge")


def check_matches(manifest: Manifest, collection: str, dim: int, model_version: str) -> None:
    """Raise CollectionMismatch unless the collection was built with this model and dimension."""
    if dim == manifest.dim and model_version == manifest.model_version:
        return
    raise CollectionMismatch(
        f"collection {collection!r} at {manifest.root} was built with model {manifest.model_version!r} "
        f"({manifest.dim}-d vectors), but the loaded model is {model_version!r} ({dim}-d). Point "
        f"LOOKALIKE_MODEL_PATH at the model the collection was built with, or set another "
        f"LOOKALIKE_COLLECTION (or delete {manifest.root}) and re-index the items with this model."
    )


def open_collection(manifest: Manifest, collection: str, dim: int, model_version: str) -> list[Shard]:
    """The shards of the collection at `manifest.root` (rank descending), created if it is new.

    The caller holds the collection's directory lock. Start-up only: loading and creating shards hold
    the GIL, which nothing else needs yet.
    """
    root = manifest.root
    if not manifest.exists():
        manifest.dim, manifest.model_version = dim, model_version
        manifest.collect_garbage(keep=set())
        name = manifest.new_name()
        hot = Shard(name=name, path=root / name, edge=create_plain_shard(root / name, dim), role="hot", rank=0)
        hot.rank = manifest.take_number()
        manifest.write([hot.record()])
        log.info("created embedded collection %s (dim %d, model %s)", root, dim, model_version)
        return [hot]
    records = manifest.load()
    check_matches(manifest, collection, dim, model_version)
    manifest.collect_garbage(keep={r.name for r in records})
    shards = sorted((Shard.load(root, r) for r in records), key=lambda s: s.rank, reverse=True)
    if not shards or shards[0].role != "hot":
        raise RuntimeError(f"{manifest.path}: the newest shard must be the hot shard")
    log.info("opened embedded collection %s: %s", root, [(s.name, s.role) for s in shards])
    return shards
