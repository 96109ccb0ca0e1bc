"""Out-of-process shard work for the embedded store (see app/store/qdrant_edge/).

Qdrant Edge's `optimize()` (the HNSW build) and `EdgeShard.create()` hold the Python GIL for their
whole run, so the serving process never calls them while it serves: it runs this module instead.

    python -m app.store.qdrant_edge.builder build  --target DIR --vectors JSON SRC [SRC ...]
    python -m app.store.qdrant_edge.builder bulk   --target DIR --vectors JSON --input STAGING
    python -m app.store.qdrant_edge.builder create --target DIR --vectors JSON

JSON is the active vector set, {name: dim} ("" = the unnamed vector of a collection from before model
versions). `build` loads each SRC (copies of the server's shards, oldest first, so a later copy of a
duplicated point wins), upserts every point with its payload and its vectors of the active names (a
version retired meanwhile is left behind) into a new shard at DIR, which has an HNSW index per name,
creates the payload indexes, runs `optimize()`, flushes and closes. `bulk` does the same with the
points of a bulk load's staging folder (staging.py) instead of shard copies: each is indexed once.
`create` makes an empty plain shard (the next hot shard). All log to stderr, which the server copies
into its log, and lower their own CPU priority so that request threads in the server win the two cores.

Then, with `--hold`, the process maps every file of the result and touches each page, prints one
JSON line (the result) on stdout and waits until the server closes its stdin. Why: EdgeShard.load()
drops the shard's files from the page cache (posix_fadvise DONTNEED) and reads them back with one
synchronous page fault after another, all while holding the server's GIL (a large shard: a long
freeze, BENCHMARKS.md "Index maintenance"). Linux never drops pages that some process has mapped, so
while this process holds the mapping the server's load() finds everything in memory.

The shard configuration helpers live here (not in the app.store.qdrant_edge package) because this
module must stay importable without the server's dependencies: it imports only qdrant_edge, numpy and
app.store (base, versions, qdrant_edge.staging).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import mmap
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qdrant_edge import (
    Distance,
    EdgeConfig,
    EdgeOptimizersConfig,
    EdgeShard,
    EdgeVectorParams,
    FloatIndexParams,
    HnswIndexConfig,
    KeywordIndexParams,
    Memory,
    MultiVectorComparator,
    MultiVectorConfig,
    Point,
    QuantizationSearchParams,
    ScalarQuantizationConfig,
    ScalarType,
    ScrollRequest,
    SearchParams,
    UpdateOperation,
)

from app.store.base import FLOAT_FIELDS, KEYWORD_FIELDS
from app.store.qdrant_edge.staging import read_points
from app.store.versions import is_multi

log = logging.getLogger("lookalike.store.edge_builder")

# indexing_threshold is in KB of vectors. The server's shards carry a threshold no shard reaches,
# so nothing in the serving process can ever decide to build an index; the builder sets 1 KB so that
# optimize() indexes every segment, even the tiny ones in tests.
NEVER_INDEX_KB = 1_000_000_000
ALWAYS_INDEX_KB = 1

# HNSW parameters of sealed shards (Qdrant's defaults). full_scan_threshold is in KB: a segment or a
# filtered candidate set smaller than this is searched exactly, which keeps restrictive filters exact.
HNSW_M = 16
HNSW_EF_CONSTRUCT = 100
FULL_SCAN_THRESHOLD_KB = 10_000

# Keyword fields used only in must_not (status != sold, seller_id != x) never restrict the candidate
# set much, so the extra per-value HNSW links Qdrant builds for filterable fields would only slow the
# build. category and price are real restricting filters and keep them.
_NO_HNSW_LINKS = frozenset({"status", "seller_id"})

SCROLL_PAGE = 512


@dataclass(frozen=True)
class IndexOptions:
    """How a sealed (HNSW-indexed) shard stores its vectors and how searches use them (Settings:
    LOOKALIKE_EDGE_QUANTIZATION, _VECTORS_ON_DISK, _HNSW_EF, _OVERSAMPLING; measured in BENCHMARKS.md,
    "Catalogue scale"). Hot shards are searched exactly and keep float32 vectors in RAM whatever this says."""

    quantization: str = "int8"  # "int8": an int8 copy of every vector in RAM is what HNSW walks; "none"
    vectors_on_disk: bool = True  # the float32 originals stay in the page cache, read only to re-score
    hnsw_ef: int = 128  # candidates kept while walking the graph (recall against cost)
    oversampling: float = 2.0  # int8 search keeps oversampling * limit candidates for the exact re-score

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> IndexOptions:
        return cls(**json.loads(text))

    def search_params(self) -> SearchParams:
        rescore = QuantizationSearchParams(rescore=True, oversampling=self.oversampling)
        return SearchParams(hnsw_ef=self.hnsw_ef, quantization=rescore if self.quantization == "int8" else None)


def shard_config(
    vectors: dict[str, int],
    *,
    indexing_threshold_kb: int,
    indexing_threads: int = 0,
    index: IndexOptions | None = None,
) -> EdgeConfig:
    """A shard's configuration: `index` for a sealed shard (quantisation, on-disk originals), None for a hot one."""
    return EdgeConfig(
        vectors={name: vector_params(name, dim, index) for name, dim in vectors.items()},
        hnsw_config=HnswIndexConfig(
            m=HNSW_M,
            ef_construct=HNSW_EF_CONSTRUCT,
            full_scan_threshold=FULL_SCAN_THRESHOLD_KB,
            max_indexing_threads=indexing_threads,
        ),
        optimizers=EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb),
        # With the originals on disk, a sealed shard's id tracker is in mapped files too (page cache, shared by
        # the processes that load the shard's views) instead of each process's heap.
        id_tracker_memory=Memory.Cached if index is not None and index.vectors_on_disk else None,
    )


def create_payload_indexes(shard: EdgeShard, mapped: bool = False) -> None:
    """The payload indexes of the filterable fields; `mapped` (a sealed shard with its originals on disk): in
    mapped files in the page cache (Memory.Cached), shared by the processes that load the shard's views, which
    would otherwise each hold a copy on their heap."""
    memory = {"memory": Memory.Cached} if mapped else {}
    for name in KEYWORD_FIELDS:
        links = {"enable_hnsw": False} if name in _NO_HNSW_LINKS else {}
        shard.update(UpdateOperation.create_field_index(name, KeywordIndexParams(**links, **memory)))
    for name in FLOAT_FIELDS:
        shard.update(UpdateOperation.create_field_index(name, FloatIndexParams(**memory)))


# A version's vector name says its layout (app/store/versions.py): a multivector of the listing's photos
# compared with MaxSim, or one vector per listing (versions from before several photos).
MAX_SIM = MultiVectorConfig(MultiVectorComparator.MaxSim)


def vector_params(name: str, dim: int, index: IndexOptions | None = None) -> EdgeVectorParams:
    multi = MAX_SIM if is_multi(name) else None
    if index is None:
        return EdgeVectorParams(size=dim, distance=Distance.Cosine, multivector_config=multi)
    # Cached: the int8 copy, which every search reads, is a mapped file kept in the page cache, so reader
    # processes that map the same (hardlinked) files share one copy in RAM (Pinned would copy it into each
    # process: measured on 200k x 768, 216 MB of a process's 708 MB RSS was its own, the rest shared pages).
    # Cold: the originals are mapped from disk and only the few re-scored per query are read.
    quantization = ScalarQuantizationConfig(ScalarType.Int8, quantile=0.99, memory=Memory.Cached)
    return EdgeVectorParams(
        size=dim,
        distance=Distance.Cosine,
        multivector_config=multi,
        quantization_config=quantization if index.quantization == "int8" else None,
        memory=Memory.Cold if index.vectors_on_disk else None,
    )


def create_vector(name: str, dim: int) -> UpdateOperation:
    """The op that adds the named vector to a shard, with the layout its name says."""
    return UpdateOperation.create_dense_vector(name, dim, Distance.Cosine, MAX_SIM if is_multi(name) else None)


def create_plain_shard(target: Path, vectors: dict[str, int]) -> EdgeShard:
    """An empty appendable shard with payload indexes and indexing disabled (a hot shard)."""
    shard = EdgeShard.create(str(target), shard_config(vectors, indexing_threshold_kb=NEVER_INDEX_KB))
    create_payload_indexes(shard)
    return shard


def vector_names(path: Path) -> dict[str, int]:
    """{named vector: dim} a shard has, from its edge_config.json (kept current by create/delete ops)."""
    config = json.loads((path / "edge_config.json").read_text(encoding="utf-8"))
    return {name: int(params["size"]) for name, params in config["vectors"].items()}


def record_vectors(vector: Any) -> dict[str, Any]:
    """A record's vectors by name (a shard with only the unnamed vector returns a plain list)."""
    if vector is None:
        return {}
    return dict(vector) if isinstance(vector, dict) else {"": vector}


def create(target: Path, vectors: dict[str, int]) -> dict[str, Any]:
    shard = create_plain_shard(target, vectors)
    shard.flush()
    shard.close()
    return {"target": str(target), "points": 0}


def new_index_shard(
    target: Path, vectors: dict[str, int], indexing_threads: int, index: IndexOptions | None
) -> EdgeShard:
    """An empty shard at `target` that optimize() will index (every segment), with the payload indexes."""
    shard = EdgeShard.create(
        str(target),
        shard_config(vectors, indexing_threshold_kb=ALWAYS_INDEX_KB, indexing_threads=indexing_threads, index=index),
    )
    create_payload_indexes(shard, mapped=index is not None and index.vectors_on_disk)
    return shard


def finish_index(
    shard: EdgeShard, target: Path, vectors: dict[str, int], index: IndexOptions | None, t0: float, upserted: int
) -> dict[str, Any]:
    """Build the HNSW indexes of a filled shard (one optimize()), store the serving config in it and
    close it; returns the result line (`upserted`: the points passed into the build)."""
    t1 = time.perf_counter()
    shard.optimize()
    t2 = time.perf_counter()
    shard.flush()
    shard.close()
    # Reopen once to store the serving configuration (indexing off) in the shard itself, so that the
    # server loads it without passing a config (loading with a config rewrites it on disk, with fsyncs,
    # while holding the GIL).
    shard = EdgeShard.load(str(target), shard_config(vectors, indexing_threshold_kb=NEVER_INDEX_KB, index=index))
    info = shard.info()
    result = {
        "target": str(target),
        "points": info.points_count,
        "upserted": upserted,
        "indexed_vectors": info.indexed_vectors_count,
        "segments": info.segments_count,
        "copy_s": round(t1 - t0, 3),
        "optimize_s": round(t2 - t1, 3),
    }
    shard.flush()
    shard.close()
    log.info("built %s: %s", target.name, result)
    return result


def build(
    target: Path,
    vectors: dict[str, int],
    sources: list[Path],
    indexing_threads: int = 0,
    index: IndexOptions | None = None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    shard = new_index_shard(target, vectors, indexing_threads, index)
    copied = 0
    for src in sources:
        source = EdgeShard.load(str(src))
        offset = None
        while True:
            records, offset = source.scroll(
                ScrollRequest(offset=offset, limit=SCROLL_PAGE, with_payload=True, with_vector=True)
            )
            if records:
                points = [
                    Point(r.id, {k: v for k, v in record_vectors(r.vector).items() if k in vectors}, r.payload)
                    for r in records
                ]
                shard.update(UpdateOperation.upsert_points(points))
                copied += len(points)
            if offset is None:
                break
        source.close()
        log.info("copied %s (%d points so far)", src.name, copied)
    return finish_index(shard, target, vectors, index, t0, copied)


def bulk(
    target: Path, vectors: dict[str, int], staging: Path, indexing_threads: int = 0, index: IndexOptions | None = None
) -> dict[str, Any]:
    """A sealed shard at `target` from the points of a bulk load's staging folder (staging.py), indexed once."""
    t0 = time.perf_counter()
    shard = new_index_shard(target, vectors, indexing_threads, index)
    staged = 0
    for points in read_points(staging, vectors, SCROLL_PAGE):
        shard.update(UpdateOperation.upsert_points(points))
        staged += len(points)
    log.info("upserted %d staged points", staged)
    return finish_index(shard, target, vectors, index, t0, staged)


def pin_and_wait(root: Path, result: dict[str, Any]) -> None:
    """Map and touch every page under root, report `result`, hold the mappings until stdin closes."""
    maps: list[mmap.mmap] = []
    pages = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.getsize(path) == 0:
                continue
            with open(path, "rb") as f:
                m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            pages += len(m[:: mmap.PAGESIZE])  # one byte per page: faults every page in
            maps.append(m)
    result = {**result, "pinned_pages": pages}
    print(json.dumps(result), flush=True)
    sys.stdin.read()  # EOF: the server has loaded the shard (or died)
    for m in maps:
        m.close()


def _die_with_parent(parent_pid: int) -> None:
    """A builder whose server was killed must not keep writing into a directory the next server
    removes on open: ask Linux to SIGKILL this process when the parent goes away."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if parent_pid and os.getppid() != parent_pid:  # the parent died before prctl took effect
        sys.exit(3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.store.qdrant_edge.builder", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("build", "bulk", "create"))
    parser.add_argument("--target", type=Path, required=True)
    parser.add_argument("--vectors", type=json.loads, required=True, help='active vectors, {"name": dim}')
    parser.add_argument(
        "--index", type=IndexOptions.from_json, default=IndexOptions(), help="sealed-shard options (IndexOptions JSON)"
    )
    parser.add_argument("--threads", type=int, default=0, help="HNSW indexing threads (0 = all cores)")
    parser.add_argument("--nice", type=int, default=10, help="added CPU niceness (request threads win)")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when this process dies")
    parser.add_argument("--hold", action="store_true", help="pin the result in memory until stdin closes")
    parser.add_argument("--input", type=Path, help="bulk: the staging folder of the points")
    parser.add_argument("sources", nargs="*", type=Path)
    args = parser.parse_intermixed_args(argv)
    _die_with_parent(args.parent_pid)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    if args.nice:
        os.nice(args.nice)
    if args.command == "create":
        result = create(args.target, args.vectors)
    elif args.command == "bulk":
        if args.input is None:
            parser.error("bulk needs --input")
        result = bulk(args.target, args.vectors, args.input, args.threads, args.index)
    else:
        if not args.sources:
            parser.error("build needs at least one source shard")
        result = build(args.target, args.vectors, args.sources, args.threads, args.index)
    if args.hold:
        pin_and_wait(args.target, result)
    else:
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
