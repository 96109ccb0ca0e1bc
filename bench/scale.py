"""A catalogue at scale: first load, then recall, latency, throughput and memory of GET /similar over HTTP.

    python -m bench.scale --items N --dim 768 [--filtered] [--keep DIR] [--json] [--baseline]

1. N clustered unit vectors with cluster-correlated payloads (bench/scale_data.py; seeded by --seed),
   streamed to a memory-mapped .npy in the work folder.
2. Imported into the embedded store as a first catalogue load goes: EdgeStore.bulk_load (shards of
   --shard-points built once each, no merges); the collection's model_version is read from the model
   file the service will load (base for 768, tiny for 32).
3. `python -m app` on that store, measured over loopback HTTP: recall@10 of GET /similar/{id}?k=10 for
   200 query items against exact brute force over the vectors with the filter the route applies by
   default (no sold items, not the item itself), and with `category=<the item's own>` (--filtered adds
   that filter to the latency levels too); p50/p99 at concurrency 1 and requests/s at 1 and 8 (closed
   loop, bounded in requests and seconds); resident memory of the service and its child processes.
4. --keep DIR leaves DIR/qdrant, DIR/vectors.npy (row i is ids[i]), DIR/ids.json, DIR/model.onnx and
   DIR/serve.env (the LOOKALIKE_* lines that serve them); a later run with the same DIR, --items,
   --dim and --seed reuses that store (no generation, no import) and measures it again.
5. --baseline: side by side, (a) the live write path (upserts of 1000, index maintenance waited for) on
   min(N, --baseline-items) items against the bulk load on the same count, and (b) the same catalogue in
   the previous store layout (float32 in RAM, the shard sizes the live path's merges leave, Qdrant's
   default search, no read workers: BASELINE_INDEX / BASELINE_ENV), served and measured the same way.

Targets (for 1M x 768 on 2 cores): recall_at_10 and recall_at_10_filtered >= 0.95, http_p99_ms <= 15,
rps_c8 >= 1.5 x rps_c1, points_built <= 1.5 x items, rss_mb <= 2500.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from app.core.model_contract import read_model_file
from bench import scale_data
from bench.common import (
    KeepAliveClient,
    cache_dir,
    cached_model,
    emit,
    get_loop,
    log,
    machine_info,
    machine_line,
    table,
)
from bench.live import LiveServer, process_memory, proportional_memory, running_service, session_processes
from bench.read_path import CONFIG_BY_DIM, item_id

# The store as it was before this layout, for --baseline: float32 vectors in RAM, Qdrant's default graph
# walk (ef = ef_construct, 100) with no int8 re-score, reads in the serving process only, and the shard
# sizes the live path's merges leave (at most 16 x hot_max points). Passed to the service as settings.
BASELINE_INDEX = {"quantization": "none", "vectors_on_disk": False, "hnsw_ef": 100, "oversampling": 1.0}
BASELINE_ENV = {
    "LOOKALIKE_EDGE_QUANTIZATION": "none",
    "LOOKALIKE_EDGE_VECTORS_ON_DISK": "false",
    "LOOKALIKE_EDGE_HNSW_EF": "100",
    "LOOKALIKE_EDGE_OVERSAMPLING": "1",
    "LOOKALIKE_EDGE_READ_WORKERS": "0",
}
TARGETS = {
    "recall_at_10_min": 0.95,
    "recall_at_10_filtered_min": 0.95,
    "http_p99_ms_max": 15.0,
    "rps_c8_over_c1_min": 1.5,
    "points_built_over_items_max": 1.5,
    "rss_mb_max": 2500.0,
}
COLLECTION = "items"
K = 10
QUERIES = 200  # recall query items
LEVEL_REQUESTS = 4000  # per concurrency level, and at most --level-seconds (default 20)
WARMUP = 5
LIVE_BATCH = 1000  # the live write path's upsert batch
MARKER = "scale.json"  # written last: a work folder without it holds no complete store
# What a run writes in its work folder (`events` is the service's own), the marker first: all made anew
# when the folder holds another catalogue. Nothing else in a --keep DIR is touched.
WORK_FILES = (
    MARKER,
    "qdrant",
    "baseline-qdrant",
    "vectors.npy",
    "fields.npz",
    "ids.json",
    "model.onnx",
    "serve.env",
    "events",
)


# ---------------------------------------------------------------- import


@contextmanager
def open_store(path: Path, model_version: str, dim: int, **options: Any) -> Iterator[Any]:
    from app.store.qdrant_edge import EdgeStore

    # sync_wal=False: no fsync per batch while loading; close() flushes every shard.
    store = EdgeStore(path, COLLECTION, sync_wal=False, **options)
    store.open({model_version: dim})
    try:
        yield store
    finally:
        store.close()


def bulk_import(
    path: Path, model_version: str, dim: int, rows: Iterable[Any], count: int, shard_points: int, label: str
) -> dict[str, Any]:
    """The first catalogue load: EdgeStore.bulk_load, then index maintenance waited for."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    with open_store(path, model_version, dim) as store, tqdm(total=count, desc=label, unit="vec") as bar:
        report = store.bulk_load(rows, shard_points=shard_points, progress=lambda done: bar.update(done - bar.n))
        if not store.wait_for_maintenance(timeout_s=3600):
            raise TimeoutError("index maintenance did not finish within an hour")
    return {
        "items": report.items,
        "shards": report.shards,
        "points_built": report.points_built,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def live_import(
    path: Path, model_version: str, dim: int, rows: Iterable[Any], count: int | None, hot_max: int
) -> dict[str, Any]:
    """The live write path (bench/read_path.py's load): upserts of LIVE_BATCH, and after every hot_max
    points the hot shard's freeze and build waited for, as a running service sees them."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    with open_store(path, model_version, dim, hot_max=hot_max) as store:
        batch: list[Any] = []
        seen = 0

        def flush() -> None:
            store.upsert([p for p, _ in batch], np.concatenate([v[model_version] for _, v in batch]))
            bar.update(len(batch))
            batch.clear()

        with tqdm(total=count, desc="live write path", unit="vec", mininterval=2) as bar:
            for seen, row in enumerate(rows, 1):
                if (seen - 1) % hot_max == 0 and not store.wait_for_maintenance(timeout_s=1800):
                    raise TimeoutError("index maintenance did not finish within 30 min")
                batch.append(row)
                if len(batch) == LIVE_BATCH or seen % hot_max == 0:
                    flush()
            if batch:
                flush()
        if not store.wait_for_maintenance(timeout_s=1800):
            raise TimeoutError("index maintenance did not finish within 30 min")
        stats = store.stats()
    return {
        "items": seen,
        "shards": len(stats["shards"]),
        "points_built": stats["points_built"],  # by every build and merge job since the store was opened
        "seconds": round(time.perf_counter() - t0, 1),
    }


def import_rates(report: dict[str, Any]) -> dict[str, Any]:
    items = report["items"]
    return {
        **report,
        "items_per_s": round(items / report["seconds"], 1) if report["seconds"] else 0.0,
        "points_built_over_items": round(report["points_built"] / items, 3) if items else 0.0,
    }


# ---------------------------------------------------------------- the work folder


def prepare(work: Path, n: int, dim: int, seed: int, model: Path, model_version: str, shard_points: int) -> dict:
    """Generate and import into `work` unless it holds a complete store of the same catalogue; the marker."""
    wanted = {"items": n, "dim": dim, "seed": seed, "model_version": model_version}
    marker = work / MARKER
    if marker.is_file():
        info = json.loads(marker.read_text())
        if {k: info.get(k) for k in wanted} == wanted:
            log(f"reusing the complete store in {work} (no generation, no import)")
            return {**info, "reused": True}
        log(f"{work} holds another catalogue ({info.get('items')} x {info.get('dim')}): making it again")
    for name in WORK_FILES:
        path = work / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    scale_data.generate(n, dim, seed, work / "vectors.npy", work / "fields.npz")
    generate_s = round(time.perf_counter() - t0, 1)
    vectors, fields = np.load(work / "vectors.npy", mmap_mode="r"), scale_data.Fields.load(work / "fields.npz")
    rows = scale_data.rows(vectors, fields, model_version, n)
    report = bulk_import(work / "qdrant", model_version, dim, rows, n, shard_points, "bulk load")
    (work / "ids.json").write_text(json.dumps([item_id(i) for i in range(n)]))
    _link(model, work / "model.onnx")
    (work / "serve.env").write_text("".join(f"{k}={v}\n" for k, v in serve_env(work).items()))
    info = {**wanted, "shard_points": shard_points, "generate_seconds": generate_s, "import": report}
    marker.write_text(json.dumps(info, indent=1))
    return {**info, "reused": False}


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def serve_env(work: Path) -> dict[str, str]:
    """What `python -m app` needs to serve the kept store."""
    return {
        "LOOKALIKE_QDRANT_PATH": str((work / "qdrant").resolve()),
        "LOOKALIKE_MODEL_PATH": str((work / "model.onnx").resolve()),
        "LOOKALIKE_COLLECTION": COLLECTION,
        "LOOKALIKE_DEVICE": "cpu",
    }


# ---------------------------------------------------------------- measuring the service


def similar_ids(client: KeepAliveClient, item: str, category: str | None) -> list[str]:
    path = f"/similar/{item}?k={K}" + (f"&category={category}" if category is not None else "")
    status, body = client.get(path)
    if status != 200:
        raise RuntimeError(f"GET {path} answered {status}: {body[:300]!r}")
    return [r["item_id"] for r in json.loads(body)["results"]]


def recall(served: list[list[str]], exact: list[list[str]]) -> float:
    """Mean share of the exact top k the service returned (queries with no eligible neighbour left out)."""
    shares = [len(set(s) & set(e)) / len(e) for s, e in zip(served, exact, strict=True) if e]
    return round(float(np.mean(shares)), 4) if shares else 0.0


def memory(service: LiveServer) -> dict[str, Any]:
    """Memory of the service and of each process it started (its session), in MB. `rss_mb` is what they
    hold together: each one's resident pages with the pages they share (the store's mapped files, which
    read workers map too) counted once (the sum of Pss); `rss_mb_main` is the main process's own RSS."""
    main = service.process.pid
    others = [int(line.split()[0]) for line in session_processes(main) if int(line.split()[0]) != main]
    pss = {pid: proportional_memory(pid) / 2**20 for pid in [main, *others]}
    return {
        "rss_mb": round(sum(pss.values()), 1),
        "rss_mb_main": round(process_memory(main).get("rss_bytes", 0) / 2**20, 1),
        "rss_mb_children": [round(process_memory(pid).get("rss_bytes", 0) / 2**20, 1) for pid in others],
        "peak_rss_mb_main": round(process_memory(main).get("peak_rss_bytes", 0) / 2**20, 1),
    }


def level(service: LiveServer, paths: list[str], concurrency: int, max_s: float) -> dict[str, Any]:
    """Closed loop at `concurrency` over keep-alive connections, bounded in requests and seconds."""
    return get_loop(
        service.host,
        service.port,
        paths,
        concurrency=concurrency,
        total=LEVEL_REQUESTS,
        max_s=max_s,
        warmup_per_worker=WARMUP,
        progress=f"GET /similar c={concurrency}",
    ).summary()


def measure(service: LiveServer, queries: dict[str, Any], filtered: bool, level_s: float) -> dict[str, Any]:
    """Recall (plain and within the item's category), then the closed-loop levels, then memory."""
    from tqdm import tqdm

    client = KeepAliveClient(service.host, service.port)
    served: dict[str, list[list[str]]] = {"plain": [], "filtered": []}
    try:
        for q, cat in tqdm(
            list(zip(queries["ids"], queries["categories"], strict=True)), desc="recall queries", mininterval=2
        ):
            served["plain"].append(similar_ids(client, q, None))
            served["filtered"].append(similar_ids(client, q, cat))
    finally:
        client.close()
    # --filtered: every latency request names a category (the one most items carry, as a shop's filter would)
    suffix = f"&category={queries['top_category']}" if filtered else ""
    paths = [f"/similar/{i}?k={K}{suffix}" for i in queries["load_ids"]]
    levels = {c: level(service, paths, c, level_s) for c in (1, 8)}
    c1, c8 = levels[1], levels[8]
    return {
        "recall_at_10": recall(served["plain"], queries["exact"]),
        "recall_at_10_filtered": recall(served["filtered"], queries["exact_filtered"]),
        "http_p50_ms": c1["p50_ms"],
        "http_p99_ms": c1["p99_ms"],
        "rps_c1": c1["rps"],
        "rps_c8": c8["rps"],
        "http_p99_ms_c8": c8["p99_ms"],
        "errors": c1["errors"] + c8["errors"],
        "rps_c8_over_c1": round(c8["rps"] / c1["rps"], 2) if c1["rps"] else 0.0,
        **memory(service),
    }


def pick_queries(vectors: np.ndarray, fields: scale_data.Fields, seed: int) -> dict[str, Any]:
    """The recall query items with their exact neighbours, and the items the latency levels ask for."""
    n = len(vectors)
    rng = np.random.default_rng(seed + 7)
    chosen = np.sort(rng.choice(n, size=min(QUERIES, n), replace=False))
    exact, exact_filtered = scale_data.exact_neighbours(vectors, fields, chosen, K)
    return {
        "ids": [item_id(int(i)) for i in chosen],
        "categories": [scale_data.CATEGORIES[int(c)] for c in fields.category[chosen]],
        "exact": exact,
        "exact_filtered": exact_filtered,
        "top_category": scale_data.CATEGORIES[int(np.bincount(fields.category).argmax())],
        "load_ids": [item_id(int(i)) for i in rng.integers(0, n, 2000)],
    }


def serve_and_measure(
    env: dict[str, str], queries: dict[str, Any], filtered: bool, level_s: float, name: str
) -> dict[str, Any]:
    log(f"starting the service ({name}) ...")
    t0 = time.perf_counter()
    with running_service(env, name=name, timeout_s=900) as service:
        ready_s = round(time.perf_counter() - t0, 1)
        return {**measure(service, queries, filtered, level_s), "ready_seconds": ready_s}


# ---------------------------------------------------------------- the run


def live_hot_max(shard_points: int) -> int:
    from app.core.settings import Settings

    return min(Settings.model_fields["edge_hot_max"].default, shard_points)


def live_layout(n: int, hot_max: int) -> list[int]:
    """The shard sizes the live write path leaves for n points (size-tiered merges of fan-in 2, up to
    16 x hot_max): whole largest shards, the rest in powers of two of hot_max, then the hot shard's part."""
    largest = 16 * hot_max
    sizes = [largest] * (n // largest)
    blocks, tail = divmod(n % largest, hot_max)
    sizes += [hot_max << bit for bit in reversed(range(blocks.bit_length())) if blocks >> bit & 1]
    return sizes + ([tail] if tail else [])


def baseline_store(work: Path, model_version: str, dim: int, hot_max: int) -> list[int]:
    """The same catalogue in the previous layout (BASELINE_INDEX, live_layout) in work/baseline-qdrant."""
    from app.store.qdrant_edge.builder import IndexOptions

    vectors, fields = np.load(work / "vectors.npy", mmap_mode="r"), scale_data.Fields.load(work / "fields.npz")
    n = len(vectors)
    sizes = live_layout(n, hot_max)
    path = work / "baseline-qdrant"
    shutil.rmtree(path, ignore_errors=True)
    rows = scale_data.rows(vectors, fields, model_version, n)
    with open_store(path, model_version, dim, index=IndexOptions(**BASELINE_INDEX)) as store:
        for size in sizes:
            log(f"baseline layout: a float32 shard of {size} points")
            store.bulk_load(itertools.islice(rows, size), shard_points=size)
    return sizes


def run_baseline(
    work: Path,
    info: dict[str, Any],
    queries: dict[str, Any],
    filtered: bool,
    level_s: float,
    count: int,
    shard_points: int,
) -> dict[str, Any]:
    """The write path and the store as they were before, on the same catalogue."""
    dim, model_version = info["dim"], info["model_version"]
    vectors, fields = np.load(work / "vectors.npy", mmap_mode="r"), scale_data.Fields.load(work / "fields.npz")
    scratch = work / "baseline-import"
    shutil.rmtree(scratch, ignore_errors=True)
    hot_max = live_hot_max(shard_points)
    try:
        live = live_import(
            scratch / "live", model_version, dim, scale_data.rows(vectors, fields, model_version, count), count, hot_max
        )
        if count == info["items"]:
            bulk = info["import"]
        else:
            rows = scale_data.rows(vectors, fields, model_version, count)
            bulk = bulk_import(
                scratch / "bulk", model_version, dim, rows, count, shard_points, "bulk load (same count)"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    del vectors
    layout = baseline_store(work, model_version, dim, hot_max)
    env = {**serve_env(work), "LOOKALIKE_QDRANT_PATH": str((work / "baseline-qdrant").resolve()), **BASELINE_ENV}
    serving = serve_and_measure(env, queries, filtered, level_s, "scale-baseline")
    return {
        "import": {"items": count, "live": import_rates(live), "bulk": import_rates(bulk), "live_hot_max": hot_max},
        "env": BASELINE_ENV,
        "shard_sizes": layout,
        **serving,
    }


def targets(r: dict[str, Any]) -> dict[str, bool]:
    return {
        "recall_at_10": r["recall_at_10"] >= TARGETS["recall_at_10_min"],
        "recall_at_10_filtered": r["recall_at_10_filtered"] >= TARGETS["recall_at_10_filtered_min"],
        "http_p99_ms": r["http_p99_ms"] <= TARGETS["http_p99_ms_max"],
        "rps_c8": r["rps_c8"] >= TARGETS["rps_c8_over_c1_min"] * r["rps_c1"],
        "points_built": r["points_built"] <= TARGETS["points_built_over_items_max"] * r["items"],
        "rss_mb": r["rss_mb"] <= TARGETS["rss_mb_max"],
    }


def ratios(r: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    def div(a: float, b: float) -> float:
        return round(a / b, 2) if b else 0.0

    live, bulk = base["import"]["live"], base["import"]["bulk"]
    return {
        "rps_c8_over_c1": r["rps_c8_over_c1"],
        "baseline_rps_c8_over_c1": base["rps_c8_over_c1"],
        "import_speedup": div(bulk["items_per_s"], live["items_per_s"]),
        "points_built_saving": div(live["points_built_over_items"], bulk["points_built_over_items"]),
        "rps_c1_vs_baseline": div(r["rps_c1"], base["rps_c1"]),
        "rps_c8_vs_baseline": div(r["rps_c8"], base["rps_c8"]),
        "http_p99_ms_vs_baseline": div(r["http_p99_ms"], base["http_p99_ms"]),
        "rss_mb_vs_baseline": div(r["rss_mb"], base["rss_mb"]),
    }


def run(
    items: int,
    dim: int,
    *,
    seed: int = 0,
    filtered: bool = False,
    keep: Path | None = None,
    baseline: bool = False,
    baseline_items: int = 20_000,
    shard_points: int = 1_000_000,
    level_s: float = 20.0,
) -> dict[str, Any]:
    if dim not in CONFIG_BY_DIM:
        raise SystemExit(f"--dim must be one of {sorted(CONFIG_BY_DIM)} (the embedding size of a SigLIP config)")
    machine = machine_info()
    model = cached_model(CONFIG_BY_DIM[dim])
    model_version = read_model_file(model).model_version
    work = keep.resolve() if keep is not None else cache_dir("scale", f"n{items}-d{dim}-s{seed}")
    try:
        info = prepare(work, items, dim, seed, model, model_version, shard_points)
        vectors, fields = np.load(work / "vectors.npy", mmap_mode="r"), scale_data.Fields.load(work / "fields.npz")
        queries = pick_queries(vectors, fields, seed)
        del vectors
        served = serve_and_measure(serve_env(work), queries, filtered, level_s, "scale")
        imported = info["import"]
        result: dict[str, Any] = {
            "benchmark": "scale",
            "items": items,
            "dim": dim,
            "seed": seed,
            "model_version": model_version,
            "filtered": filtered,
            "machine": machine,
            "reused_store": info["reused"],
            "import_seconds": imported["seconds"],
            "points_built": imported["points_built"],
            "shards": imported["shards"],
            "shard_points": info["shard_points"],
            "generate_seconds": info["generate_seconds"],
            **served,
            "level_seconds": level_s,
            "kept": str(work) if keep is not None else None,
        }
        result["targets"] = {**TARGETS, "met": targets(result), "for": "1M x 768 on 2 cores"}
        if baseline:
            count = min(items, baseline_items)
            result["baseline"] = run_baseline(work, info, queries, filtered, level_s, count, shard_points)
            result["ratios"] = ratios(result, result["baseline"])
        return result
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- output


def render(r: dict[str, Any]) -> str:
    met = r["targets"]["met"]
    t = r["targets"]
    target_text = {
        "recall_at_10": f">= {t['recall_at_10_min']}",
        "recall_at_10_filtered": f">= {t['recall_at_10_filtered_min']}",
        "http_p99_ms": f"<= {t['http_p99_ms_max']}",
        "rps_c8": f">= {t['rps_c8_over_c1_min']} x rps_c1",
        "points_built": f"<= {t['points_built_over_items_max']} x items",
        "rss_mb": f"<= {t['rss_mb_max']}",
    }
    names = ["recall_at_10", "recall_at_10_filtered", "http_p50_ms", "http_p99_ms", "rps_c1", "rps_c8"]
    names += ["rss_mb", "rss_mb_main", "import_seconds", "points_built", "shards"]
    base = r.get("baseline")
    rows = []
    for name in names:
        row = {"figure": name, "value": r[name]}
        if base is not None:
            row["baseline"] = base.get(name, "-")
        row["target"] = target_text.get(name, "")
        row["met"] = ("met" if met[name] else "MISSED") if name in met else ""
        rows.append(row)
    lines = [
        f"scale: {r['items']} x {r['dim']} embedded (Qdrant Edge), GET /similar k={K}"
        + (" with a category filter" if r["filtered"] else "")
        + (" (reused store)" if r["reused_store"] else ""),
        machine_line(r["machine"]),
        table(rows),
        f"rss_mb_children: {r['rss_mb_children']}; targets are for {t['for']}",
    ]
    if base is not None:
        imp = base["import"]
        lines.append(
            table(
                [
                    {
                        "import": name,
                        **{
                            k: imp[name][k]
                            for k in (
                                "items",
                                "seconds",
                                "items_per_s",
                                "points_built",
                                "points_built_over_items",
                                "shards",
                            )
                        },
                    }
                    for name in ("live", "bulk")
                ],
                title=f"first load of {imp['items']} items: live write path (hot_max {imp['live_hot_max']}) "
                "vs bulk load",
            )
        )
        lines.append("baseline env: " + " ".join(f"{k}={v}" for k, v in base["env"].items()))
        lines.append(f"baseline shards: {base['shard_sizes']}")
        lines.append("ratios: " + ", ".join(f"{k}={v}" for k, v in r["ratios"].items()))
    if r["kept"]:
        lines.append(f"kept in {r['kept']} (serve with the lines of {r['kept']}/serve.env)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.common import base_parser

    parser = base_parser(__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000, help="items in the catalogue (default 100000)")
    parser.add_argument("--dim", type=int, default=768, help="32 (tiny model) or 768 (base; default)")
    parser.add_argument("--seed", type=int, default=0, help="the catalogue's seed (default 0)")
    parser.add_argument("--filtered", action="store_true", help="the latency levels ask with a category filter")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR", help="keep (or reuse) the store in DIR")
    parser.add_argument("--baseline", action="store_true", help="also the write path and serving settings before")
    parser.add_argument("--baseline-items", type=int, default=20_000, help="items of the live write path baseline")
    parser.add_argument(
        "--shard-points", type=int, default=1_000_000, help="points per shard the bulk load builds (default 1000000)"
    )
    parser.add_argument("--level-seconds", type=float, default=20.0, help="time bound per concurrency level")
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.dim, args.shard_points, args.baseline_items = 3000, 32, 1000, 2000
    if args.items < 1 or args.shard_points < 1:
        parser.error("--items and --shard-points must be positive")
    result = run(
        args.items,
        args.dim,
        seed=args.seed,
        filtered=args.filtered,
        keep=args.keep,
        baseline=args.baseline,
        baseline_items=args.baseline_items,
        shard_points=args.shard_points,
        level_s=args.level_seconds,
    )
    emit(result, args.json, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
