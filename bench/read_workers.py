"""GET /similar throughput with and without reader processes (LOOKALIKE_EDGE_READ_WORKERS), over HTTP.

    python -m bench.read_workers [--items 20000] [--dim 768] [--workers 2] [--json] [--quick]

Qdrant Edge holds the GIL while it searches, so one service process answers GET /similar on about one
core. With reader processes the HNSW searches of the indexed shards run in other processes
(app/store/qdrant_edge/readers.py). This loads N clustered unit vectors into the embedded store (as
bench/read_path.py does, cached under .bench-cache/read-workers/), starts `python -m app` on it with
0 readers and, on a copy, with W readers, and runs closed-loop GET /similar/{random item}?k=10 at
concurrency 1 and 8, the two services taking turns block by block (bench/read_path.measure_services).

Target: on 2 cores, concurrency 8 with readers answers >= 1.5x the rps of concurrency 1. Readers only
help when a core is idle: on a machine whose other load already fills every core (see the load average
in the machine line) neither service scales, and the readers' socket round trip costs some c=1 rps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.core.model_contract import read_model_file
from bench.common import base_parser, cache_dir, cached_model, emit, machine_info, machine_line, table
from bench.read_path import CONFIG_BY_DIM, load_edge_store, measure_services, payload, query_ids

TARGET_SCALING = 1.5
CLUSTERS = 200


def clustered(n: int, dim: int, seed: int, model_version: str) -> tuple[list[dict[str, Any]], np.ndarray]:
    """N payloads and unit vectors around CLUSTERS centres (near neighbours exist, as for real photos)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, dim), dtype=np.float32)
    v = centres[rng.integers(0, CLUSTERS, n)] + 0.6 * rng.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return [payload(i, rng, model_version) for i in range(n)], v


def run(items: int, dim: int, workers: int, requests: int, max_s: float, hot_max: int, seed: int = 0) -> dict[str, Any]:
    model_path = cached_model(CONFIG_BY_DIM[dim])
    model_version = read_model_file(model_path).model_version
    store_path = cache_dir("read-workers", f"n{items}-d{dim}-h{hot_max}-{model_version}")
    layout = load_edge_store(store_path, clustered(items, dim, seed, model_version), model_version, hot_max, seed)
    env = {
        "LOOKALIKE_MODEL_PATH": str(model_path),
        "LOOKALIKE_QDRANT_PATH": str(store_path),
        "LOOKALIKE_EDGE_HOT_MAX": str(hot_max),
        "LOOKALIKE_DEVICE": "cpu",
        "LOOKALIKE_LOG_LEVEL": "warning",
        "LOOKALIKE_EDGE_READ_WORKERS": "0",
    }
    variants = {f"readers-{workers}": {"LOOKALIKE_EDGE_READ_WORKERS": str(workers)}}
    ids = query_ids(items, 400, seed)
    results, _ = measure_services(env, store_path, variants, ids, 10, requests, max_s)
    rows = []
    for name, levels in results.items():
        c1, c8 = levels["1"], levels["8"]
        scaling = round(c8["rps"] / c1["rps"], 2) if c1["rps"] else 0.0
        rows.append(
            {
                "service": "readers-0" if name == "default" else name,
                "rps_c1": c1["rps"],
                "p50_ms_c1": c1["http_p50_ms"],
                "p99_ms_c1": c1["http_p99_ms"],
                "rps_c8": c8["rps"],
                "p50_ms_c8": c8["http_p50_ms"],
                "p99_ms_c8": c8["http_p99_ms"],
                "c8_over_c1": scaling,
                # the service process alone (its readers' CPU is not counted): what offloading takes off its GIL
                "service_cpu_ms_per_req": c8["service_cpu_ms_per_request"],
                "errors": c1["errors"] + c8["errors"],
            }
        )
    return {
        "benchmark": "read_workers",
        "items": items,
        "dim": dim,
        "workers": workers,
        "machine": machine_info(),
        "rows": rows,
        "store_layout": layout["shards"],
        "target_c8_over_c1": TARGET_SCALING,
        "target_met": rows[-1]["c8_over_c1"] >= TARGET_SCALING,
    }


def render(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"GET /similar, {r['items']} x {r['dim']} clustered, embedded store, 0 vs {r['workers']} reader processes",
            machine_line(r["machine"]),
            table(r["rows"]),
            "shards: " + ", ".join(f"{s['role']}:{s['points']}" for s in r["store_layout"]),
            f"target c8_over_c1 >= {r['target_c8_over_c1']} with readers: {'met' if r['target_met'] else 'MISSED'}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=None, help="vectors (default 20000; quick 2000)")
    parser.add_argument("--dim", type=int, default=None, help="32 (tiny model) or 768 (base); default 768, quick 32")
    parser.add_argument("--workers", type=int, default=2, help="reader processes of the compared service")
    parser.add_argument("--requests", type=int, default=None, help="requests per level (default 2000)")
    parser.add_argument("--max-seconds", type=float, default=None, help="time bound per level (default 30)")
    parser.add_argument("--hot-max", type=int, default=None, help="LOOKALIKE_EDGE_HOT_MAX (default 5000)")
    args = parser.parse_args(argv)
    quick = args.quick
    result = run(
        args.items or (2000 if quick else 20_000),
        args.dim or (32 if quick else 768),
        args.workers,
        args.requests or (300 if quick else 2000),
        args.max_seconds or (5.0 if quick else 30.0),
        args.hot_max or (500 if quick else 5000),
    )
    emit(result, args.json, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
