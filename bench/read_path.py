"""GET /similar latency and throughput over HTTP against the running service (embedded Qdrant Edge).

    python -m bench.read_path --items 20000 --dim 768 [--json] [--quick]

1. N random unit vectors (with marketplace-like payloads) are loaded straight into the embedded store
   (EdgeStore, big upsert batches, then its index maintenance is waited for), under
   .bench-cache/read-path/, reused by later runs with the same N, D and model (--reload rebuilds).
   The collection's model_version is read from the model file the service will load.
2. In-process: EdgeStore.similar p50 (`store_p50_ms`), and the same call on qdrant-client's local
   mode (`QdrantClient(":memory:")` behind app/store/qdrant_server.py) holding the same N vectors
   (`local_mode_p50_ms`).
3. `python -m app` is started on that store (a model with embedding_dim = D: base for 768, tiny for 32),
   and closed-loop GET /similar/{random item}?k=10 runs at concurrency 1 and 8 over keep-alive
   loopback connections, bounded in requests and seconds.

Targets: http_p99_ms <= 10 at concurrency 1 and speedup_vs_local_mode >= 50.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from app.core.model_contract import read_model_file
from bench.common import (
    LoadResult,
    cache_dir,
    cached_model,
    emit,
    get_loop,
    log,
    machine_info,
    machine_line,
    summary_ms,
    table,
    time_calls,
)
from bench.live import LiveServer, running_service

CONFIG_BY_DIM = {32: "tiny", 768: "base"}
CATEGORIES = ("bags", "shoes", "watches", "tops", "dresses", "toys", "games", "books", "phones", "cameras")
TARGET_P99_MS = 10.0
TARGET_SPEEDUP = 50.0
LOAD_BATCH = 1000
ROUNDS = 5  # turns per concurrency level when variants are compared
WARMUP = 5  # untimed requests per connection before a level


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def item_id(i: int) -> str:
    return f"item-{i:07d}"


def payload(i: int, rng: np.random.Generator, model_version: str) -> dict[str, Any]:
    """What the service stores for an item (app/service/writes.py), so GET /items/{id} answers for it too."""
    return {
        "item_id": item_id(i),
        "title": f"listing {i}",
        "category": CATEGORIES[int(rng.integers(len(CATEGORIES)))],
        "price": float(rng.integers(1, 500)),
        "seller_id": f"seller-{int(rng.integers(0, max(1, i // 20 + 1)))}",
        "status": "sold" if rng.random() < 0.05 else "on_sale",
        "model_version": model_version,
        "indexed_at": 1_795_000_000.0 + i,
    }


def dataset(n: int, dim: int, seed: int, model_version: str) -> tuple[list[dict[str, Any]], np.ndarray]:
    """N payloads and unit vectors, the same for every store that loads them."""
    rng = np.random.default_rng(seed)
    payloads = [payload(i, rng, model_version) for i in range(n)]
    return payloads, unit_vectors(rng, n, dim)


def load_edge_store(
    path: Path, data: tuple[list[dict[str, Any]], np.ndarray], model_version: str, hot_max: int, seed: int
) -> dict[str, Any]:
    """Bulk-load the embedded store; returns the shard layout once its index maintenance is idle.

    Loading is paced by the store's own maintenance: after every `hot_max` points the loader waits until
    the hot shard has been frozen and indexed, so every full `hot_max` block ends up in an HNSW-indexed
    shard and only `N mod hot_max` points stay in the hot (exactly searched) shard, as in a service that
    has been running for a while. (Upserting faster than the store can freeze leaves an oversized hot
    shard behind, which a live service never sees.)
    """
    from tqdm import tqdm

    from app.store.qdrant_edge import EdgeStore

    payloads, vectors = data
    n, dim = vectors.shape
    marker = path / "loaded.json"
    from app.core.settings import Settings

    # The served app merges with the default policy, so the cached layout must come from that policy too.
    fanin = Settings.model_fields["edge_merge_fanin"].default
    wanted = {
        "items": n,
        "dim": dim,
        "model_version": model_version,
        "hot_max": hot_max,
        "merge_fanin": fanin,
        "seed": seed,
        "format": 3,
    }
    if marker.is_file() and {k: v for k, v in json.loads(marker.read_text()).items() if k in wanted} == wanted:
        log(f"reusing the loaded store at {path}")
        return json.loads(marker.read_text())
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    t0 = time.perf_counter()
    # sync_wal=False: no fsync per batch while loading; close() flushes every shard.
    store = EdgeStore(path, "items", hot_max=hot_max, merge_fanin=fanin, sync_wal=False)
    store.open({model_version: dim})
    chunk = min(LOAD_BATCH, hot_max)
    try:
        with tqdm(total=n, desc="load embedded store", unit="vec", file=sys.stderr) as bar:
            for start in range(0, n, chunk):
                if start % hot_max == 0 and not store.wait_for_maintenance(timeout_s=1800):
                    raise TimeoutError("index maintenance did not finish within 30 min")
                end = min(n, start + chunk, (start // hot_max + 1) * hot_max)
                store.upsert(payloads[start:end], vectors[start:end])
                bar.update(end - start)
        if not store.wait_for_maintenance(timeout_s=1800):
            raise TimeoutError("index maintenance did not finish within 30 min")
        stats = store.stats()
    finally:
        store.close()
    info = {
        **wanted,
        "load_s": round(time.perf_counter() - t0, 1),
        "shards": [
            {k: s[k] for k in ("name", "role", "points", "indexed_vectors", "segments")} for s in stats["shards"]
        ],
    }
    marker.write_text(json.dumps(info, indent=1))
    return info


def query_ids(n: int, count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed + 7)
    return [item_id(int(i)) for i in rng.integers(0, n, count)]


def time_store(store: Any, ids: list[str], k: int, max_s: float) -> dict[str, float]:
    """Latency summary of store.similar, plus the process's CPU time per call (all threads: the engine
    searches on its own thread pool, so the calling thread's CPU time alone would hide most of it)."""
    from app.store.base import SimilarFilters

    filters = SimilarFilters()
    it = iter(ids * 1000)

    def one() -> None:
        hits = store.similar(next(it), k, filters)
        assert hits is not None

    cpu0 = time.process_time()
    samples = time_calls(one, count=len(ids), max_s=max_s, warmup=0)
    cpu_ms = (time.process_time() - cpu0) * 1e3 / len(samples)
    return {**summary_ms(samples), "cpu_ms": round(cpu_ms, 3)}


def edge_store_p50(
    path: Path, dim: int, model_version: str, hot_max: int, ids: list[str], k: int, max_s: float
) -> dict[str, float]:
    from app.store.qdrant_edge import EdgeStore

    store = EdgeStore(path, "items", hot_max=hot_max)
    store.open({model_version: dim})
    try:
        time_store(store, ids[:20], k, max_s)  # warm-up: page the shards in
        return time_store(store, ids, k, max_s)
    finally:
        store.close()


def local_mode_p50(
    data: tuple[list[dict[str, Any]], np.ndarray], model_version: str, ids: list[str], k: int, max_s: float
) -> dict[str, float]:
    """The same similar() call on qdrant-client's local mode (the server-mode store code, in memory)."""
    from qdrant_client import QdrantClient
    from tqdm import tqdm

    from app.store.qdrant_server import ServerStore

    payloads, vectors = data
    store = ServerStore(QdrantClient(":memory:"), "items")
    store.open({model_version: vectors.shape[1]})
    try:
        with tqdm(total=len(payloads), desc="load local mode", unit="vec", file=sys.stderr) as bar:
            for start in range(0, len(payloads), LOAD_BATCH):
                store.upsert(payloads[start : start + LOAD_BATCH], vectors[start : start + LOAD_BATCH])
                bar.update(min(LOAD_BATCH, len(payloads) - start))
        time_store(store, ids[:2], k, max_s)  # warm-up
        return time_store(store, ids, k, max_s)
    finally:
        store.close()


def http_load(
    service: LiveServer, ids: list[str], k: int, concurrency: int, total: int, max_s: float, label: str, warmup: int
) -> LoadResult:
    return get_loop(
        service.host,
        service.port,
        [f"/similar/{item_id}?k={k}" for item_id in ids],
        concurrency=concurrency,
        total=total,
        max_s=max_s,
        warmup_per_worker=warmup,
        progress=f"GET /similar {label} c={concurrency}",
    )


def _level(res: LoadResult, cpu_s: float, warmups: int) -> dict[str, Any]:
    s = res.summary()
    done = s["requests"] + s["errors"] + warmups
    return {
        "requests": s["requests"],
        "errors": s["errors"],
        "rps": s["rps"],
        "http_p50_ms": s["p50_ms"],
        "http_p90_ms": s["p90_ms"],
        "http_p99_ms": s["p99_ms"],
        "http_max_ms": s["max_ms"],
        "service_cpu_ms_per_request": round(cpu_s * 1e3 / done, 3) if done else 0.0,
    }


def measure_services(
    env: dict[str, str],
    store_path: Path,
    variants: dict[str, dict[str, str]],
    ids: list[str],
    k: int,
    requests: int,
    max_s: float,
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, int]]:
    """Closed loop at concurrency 1 and 8 against the default service and each variant, side by side.

    A variant is the same service with extra environment (e.g. PYTHONPATH with uvloop and httptools, or
    LOOKALIKE_LOG_LEVEL=warning) on its own copy of the store (one process may open a store). With
    variants, each level runs in ROUNDS blocks, the services taking turns block by block, so slow
    phases of the machine's other load hit all of them alike.
    """
    names = ["default", *variants]
    rounds = ROUNDS if variants else 1
    with ExitStack() as stack:
        services: dict[str, LiveServer] = {}
        for name in names:
            path = store_path
            if name != "default":
                path = store_path.with_name(store_path.name + f"-copy-{name}")
                shutil.rmtree(path, ignore_errors=True)
                shutil.copytree(store_path, path, ignore=shutil.ignore_patterns(".lock"))
                stack.callback(shutil.rmtree, path, ignore_errors=True)
            extra = {**env, "LOOKALIKE_QDRANT_PATH": str(path), **variants.get(name, {})}
            services[name] = stack.enter_context(running_service(extra, name=f"read_path-{name}"))
        results: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in names}
        for concurrency in (1, 8):
            merged = {name: LoadResult(concurrency) for name in names}
            cpu = dict.fromkeys(names, 0.0)
            for turn in range(rounds):
                for name in names:
                    cpu0 = services[name].cpu_s()
                    warmup = WARMUP if turn == 0 else 0
                    part = http_load(
                        services[name], ids, k, concurrency, requests // rounds, max_s / rounds, name, warmup
                    )
                    cpu[name] += services[name].cpu_s() - cpu0
                    merged[name].latencies_s += part.latencies_s
                    merged[name].errors += part.errors
                    merged[name].wall_s += part.wall_s
            for name in names:
                results[name][str(concurrency)] = _level(merged[name], cpu[name], WARMUP * concurrency)
        memory = services["default"].rss_bytes()
    return results, memory


def run(
    items: int,
    dim: int,
    *,
    quick: bool,
    k: int = 10,
    requests: int = 3000,
    max_s: float = 30.0,
    reload: bool = False,
    hot_max: int = 10_000,
    variants: dict[str, dict[str, str]] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    if dim not in CONFIG_BY_DIM:
        raise SystemExit(f"--dim must be one of {sorted(CONFIG_BY_DIM)} (the embedding size of a SigLIP config)")
    machine = machine_info()
    model_path = cached_model(CONFIG_BY_DIM[dim])
    meta = read_model_file(model_path)
    model_version = meta.model_version
    assert meta.embedding_dim == dim
    store_path = cache_dir("read-path", f"n{items}-d{dim}-h{hot_max}-{model_version}")
    if reload:
        shutil.rmtree(store_path, ignore_errors=True)
        store_path.mkdir(parents=True)
    data = dataset(items, dim, seed, model_version)
    layout = load_edge_store(store_path, data, model_version, hot_max, seed)
    ids = query_ids(items, 400 if not quick else 50, seed)

    log("timing EdgeStore.similar in-process ...")
    store_stats = edge_store_p50(store_path, dim, model_version, hot_max, ids, k, max_s=10 if not quick else 2)
    log("loading qdrant-client local mode with the same vectors and timing the same call ...")
    local_stats = local_mode_p50(data, model_version, ids[:40], k, max_s=20 if not quick else 2)
    del data

    env = {
        "LOOKALIKE_MODEL_PATH": str(model_path),
        "LOOKALIKE_QDRANT_PATH": str(store_path),
        "LOOKALIKE_EDGE_HOT_MAX": str(hot_max),
        "LOOKALIKE_DEVICE": "cpu",
    }
    results, memory = measure_services(env, store_path, variants or {}, ids, k, requests, max_s)
    levels = results["default"]
    variant_rows = {name: lv for name, lv in results.items() if name != "default"}
    c1 = levels["1"]
    local_p50 = local_stats["p50_ms"]
    speedup = round(local_p50 / c1["http_p50_ms"], 1) if c1["http_p50_ms"] > 0 else 0.0
    return {
        "benchmark": "read_path",
        "items": items,
        "dim": dim,
        "k": k,
        "quick": quick,
        "model_version": model_version,
        "machine": machine,
        "http_p50_ms": c1["http_p50_ms"],
        "http_p99_ms": c1["http_p99_ms"],
        "rps": c1["rps"],
        "concurrency": levels,
        "store_p50_ms": store_stats["p50_ms"],
        "store_p99_ms": store_stats["p99_ms"],
        "store_cpu_ms": store_stats["cpu_ms"],
        "local_mode_p50_ms": local_p50,
        "speedup_vs_local_mode": speedup,
        "service_rss_bytes": memory.get("rss_bytes", 0),
        "service_peak_rss_bytes": memory.get("peak_rss_bytes", 0),
        "variants": {name: {"env": (variants or {})[name], "concurrency": lv} for name, lv in variant_rows.items()},
        "hot_max": hot_max,
        "store_layout": layout["shards"],
        "load_s": layout.get("load_s", 0.0),
        "targets": {
            "http_p99_ms_max": TARGET_P99_MS,
            "speedup_min": TARGET_SPEEDUP,
            "http_p99_met": c1["http_p99_ms"] <= TARGET_P99_MS,
            "speedup_met": speedup >= TARGET_SPEEDUP,
        },
    }


def render_variants(r: dict[str, Any]) -> list[str]:
    if not r["variants"]:
        return []
    rows = []
    for name, levels in [("default", r["concurrency"]), *((n, v["concurrency"]) for n, v in r["variants"].items())]:
        for c, level in levels.items():
            base = r["concurrency"][c]
            rows.append(
                {
                    "service": name,
                    "concurrency": int(c),
                    "http_p50_ms": level["http_p50_ms"],
                    "http_p99_ms": level["http_p99_ms"],
                    "rps": level["rps"],
                    "p50_vs_default": round(level["http_p50_ms"] / base["http_p50_ms"], 2),
                    "rps_vs_default": round(level["rps"] / base["rps"], 2) if base["rps"] else 0.0,
                    "cpu_ms_per_req": level["service_cpu_ms_per_request"],
                    "cpu_vs_default": round(
                        level["service_cpu_ms_per_request"] / base["service_cpu_ms_per_request"], 2
                    ),
                }
            )
    envs = [f"  {n}: {' '.join(f'{k}={v}' for k, v in d['env'].items())}" for n, d in r["variants"].items()]
    return ["side by side (services taking turns, 5 blocks per level):", table(rows), *envs]


def render(r: dict[str, Any]) -> str:
    rows = [
        {"concurrency": int(c), **{k: v for k, v in level.items() if k != "errors"}, "errors": level["errors"]}
        for c, level in r["concurrency"].items()
    ]
    lines = [
        f"read path: GET /similar, {r['items']} x {r['dim']} embedded (Qdrant Edge), k={r['k']}",
        machine_line(r["machine"]),
        table(rows),
        table(
            [
                {
                    "store_p50_ms": r["store_p50_ms"],
                    "store_p99_ms": r["store_p99_ms"],
                    "store_cpu_ms": r["store_cpu_ms"],
                    "http_p50_ms (c=1)": r["http_p50_ms"],
                    "local_mode_p50_ms": r["local_mode_p50_ms"],
                    "speedup_vs_local_mode": r["speedup_vs_local_mode"],
                    "service_rss_MB": round(r["service_rss_bytes"] / 2**20),
                }
            ]
        ),
        *render_variants(r),
        "shards: " + ", ".join(f"{s['role']}:{s['points']}" for s in r["store_layout"]),
        "targets: http_p99_ms <= {http_p99_ms_max} -> {p99}; speedup >= {speedup_min} -> {sp}".format(
            **r["targets"],
            p99="met" if r["targets"]["http_p99_met"] else "MISSED",
            sp="met" if r["targets"]["speedup_met"] else "MISSED",
        ),
    ]
    return "\n".join(lines)


def parse_variants(specs: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for spec in specs:
        name, _, pairs = spec.partition(":")
        if not name or name == "default" or not pairs:
            raise SystemExit(f"--variant {spec!r}: expected NAME:KEY=VALUE[,KEY=VALUE]")
        out[name] = dict(pair.split("=", 1) for pair in pairs.split(","))
    return out


def main(argv: list[str] | None = None) -> int:
    from bench.common import base_parser

    parser = base_parser(__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=None, help="vectors in the store (default 20000; quick 1000)")
    parser.add_argument("--dim", type=int, default=None, help="32 (tiny model) or 768 (base); default 768, quick 32")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--requests", type=int, default=None, help="requests per concurrency level (default 3000)")
    parser.add_argument("--max-seconds", type=float, default=None, help="time bound per level (default 30)")
    parser.add_argument("--reload", action="store_true", help="rebuild the cached store")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="also run the service with this extra environment, side by side (repeatable)",
    )
    parser.add_argument(
        "--hot-max", type=int, default=None, help="LOOKALIKE_EDGE_HOT_MAX for the load and the service (default 10000)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    result = run(
        args.items or (1000 if quick else 20_000),
        args.dim or (32 if quick else 768),
        quick=quick,
        k=args.k,
        requests=args.requests or (200 if quick else 3000),
        max_s=args.max_seconds or (5.0 if quick else 30.0),
        reload=args.reload,
        # quick: small shards, so that builds, a merge and the sealed layout run too
        hot_max=args.hot_max or (400 if quick else 10_000),
        variants=parse_variants(args.variant),
    )
    emit(result, args.json, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
