"""Listings with several photos: served ranking vs the exact aggregate, and the cost of a many-photo query.

    python -m bench.several_photos --listings 20000 --dim 128 [--json] [--quick]

1. N listings of 1 to 8 photos each (uniform) of L2-normalised vectors, written straight into the embedded
   store (EdgeStore, batches of 500, then its index maintenance is waited for: HNSW over the multivectors),
   in two catalogs: `random` (independent unit vectors) and `clustered` (each listing near one of N/20
   product centres, each photo a noisy view of it: neighbours that mean something, as real photos have).
2. recall@10 of EdgeStore.similar (the served ranking: one MaxSim query per query listing, over-fetch,
   exact re-score; app/store/photos.py) against the exact ranking by brute force over every photo with the
   same score (symmetric Chamfer: the mean of both directions' mean best cosine), for query listings drawn
   at random.
3. EdgeStore.similar latency for query listings of 5 photos vs 1 photo in the same catalog (p50/p99) and
   the ratio of their p99s; write cost per photo (upsert time of the load / photos written).

Targets: recall_at_10 >= 0.95, p99 ratio (5 photos / 1 photo) <= 1.5.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import numpy as np

from app.store.base import SimilarFilters
from app.store.qdrant_edge import EdgeStore
from bench.common import base_parser, cache_dir, emit, log, machine_info, machine_line, summary_ms, table, time_calls

ANY = SimilarFilters(include_sold=True)
K = 10


def unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


def make_catalog(kind: str, n: int, dim: int, rng: np.random.Generator) -> list[np.ndarray]:
    counts = rng.integers(1, 9, size=n)
    if kind == "random":
        return [unit(rng.standard_normal((c, dim))) for c in counts]
    centres = unit(rng.standard_normal((max(1, n // 20), dim)))
    product = rng.integers(0, len(centres), size=n)
    return [unit(centres[p] + 0.6 * unit(rng.standard_normal((c, dim)))) for p, c in zip(product, counts, strict=True)]


def load(store: EdgeStore, listings: list[np.ndarray]) -> float:
    """Write every listing (batches of 500); seconds spent in upsert."""
    spent = 0.0
    for start in range(0, len(listings), 500):
        chunk = listings[start : start + 500]
        payloads = [{"item_id": f"l{start + i}", "status": "on_sale"} for i in range(len(chunk))]
        t0 = time.perf_counter()
        store.upsert(payloads, chunk)
        spent += time.perf_counter() - t0
    return spent


def exact_top(listings: list[np.ndarray], owner: np.ndarray, flat: np.ndarray, query: int, k: int) -> list[str]:
    """Brute force over every photo: each listing's score with the query listing (symmetric Chamfer: the mean
    over the query's photos of each one's best cosine among the listing's photos, averaged with the same the
    other way round), top k by (score, id)."""
    sims = flat @ listings[query].T  # [all photos, query photos]
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    counts = np.diff(np.r_[starts, len(owner)])
    forward = np.maximum.reduceat(sims, starts, axis=0).mean(axis=1)
    reverse = np.add.reduceat(sims.max(axis=1), starts) / counts
    score = (forward + reverse) / 2
    score[query] = -np.inf
    order = sorted(range(len(listings)), key=lambda i: (-float(score[i]), f"l{i}"))
    return [f"l{i}" for i in order[:k]]


def similar_latency(store: EdgeStore, ids: list[int], rng: np.random.Generator, max_s: float) -> dict[str, float]:
    """EdgeStore.similar latency for query listings drawn from `ids`."""
    chosen = iter(rng.choice(ids, size=100_000))
    return summary_ms(time_calls(lambda: store.similar(f"l{next(chosen)}", K, ANY), count=300, max_s=max_s))


def run_catalog(kind: str, n: int, dim: int, queries: int, seed: int, max_s: float) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    listings = make_catalog(kind, n, dim, rng)
    root = cache_dir("several-photos", f"{kind}-{n}-{dim}")
    shutil.rmtree(root, ignore_errors=True)
    store = EdgeStore(root, "items", hot_max=max(100, min(10_000, n // 2)), builder_nice=0)
    store.open({"bench": dim})
    try:
        log(f"{kind}: writing {n} listings")
        upsert_s = load(store, listings)
        assert store.wait_for_maintenance(1800), "index maintenance did not finish"
        flat = np.concatenate(listings)
        owner = np.concatenate([np.full(len(p), i) for i, p in enumerate(listings)])
        picks = rng.choice(n, size=min(queries, n), replace=False)
        recalls = []
        for q in picks:
            served = [h.item_id for h in store.similar(f"l{q}", K, ANY) or []]
            recalls.append(len(set(served) & set(exact_top(listings, owner, flat, int(q), K))) / K)
        by_count = {c: [i for i in range(n) if len(listings[i]) == c] for c in (1, 5)}
        latency = {c: similar_latency(store, by_count[c], rng, max_s) for c in by_count}
        photos = int(sum(len(p) for p in listings))
        return {
            "catalog": kind,
            "listings": n,
            "photos": photos,
            "shards": len(store.stats()["shards"]),
            "recall_at_10": round(float(np.mean(recalls)), 4),
            "recall_min": round(float(np.min(recalls)), 2),
            "p50_ms_1_photo": latency[1]["p50_ms"],
            "p99_ms_1_photo": latency[1]["p99_ms"],
            "p50_ms_5_photos": latency[5]["p50_ms"],
            "p99_ms_5_photos": latency[5]["p99_ms"],
            "p99_ratio_5_vs_1": round(latency[5]["p99_ms"] / latency[1]["p99_ms"], 2),
            "upsert_us_per_photo": round(upsert_s / photos * 1e6, 1),
        }
    finally:
        store.close()
        shutil.rmtree(root, ignore_errors=True)


def render(result: dict[str, Any]) -> str:
    return machine_line(result["machine"]) + "\n" + table(result["catalogs"], title="several photos (EdgeStore)")


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--listings", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20261204)
    args = parser.parse_args()
    n, queries, max_s = (600, 20, 5.0) if args.quick else (args.listings, args.queries, 60.0)
    catalogs = [run_catalog(kind, n, args.dim, queries, args.seed, max_s) for kind in ("clustered", "random")]
    emit({"benchmark": "several_photos", "machine": machine_info(), "catalogs": catalogs}, args.json, render)


if __name__ == "__main__":
    main()
