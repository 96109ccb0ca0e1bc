"""Read latency and GIL freezes while items stream into the embedded store.

    python -m bench.index_maintenance --items 20000 --dim 768 [--rate 200] [--json]
    python -m bench.index_maintenance --items 20000 --dim 768 --naive   # one shard, optimize() in-process

One process, like the service: a writer upserts at a fixed rate (batches of --batch), a reader thread
calls similar() in a closed loop, and a ticker thread sleeps 1 ms at a time and records how late it
wakes up: a late wake-up is a stretch in which no Python thread could run (a GIL hold or CPU
starvation). A second ticker runs in a separate process (no shared GIL): a stall it sees at the same
moment is the machine's (CPU or I/O starvation from other work), not ours, and the "gil" columns
leave such stalls out. Phases: seed (bulk load, then wait for maintenance), idle (reads only), stream (reads
while writes stream in), drain (writes done, maintenance finishing), idle_after (reads only, final
layout). The naive mode keeps all points in one Edge shard and calls optimize() from a background
thread every --hot-max items, which is what the LSM design exists to avoid.

Vectors are clustered (random centres plus noise, L2-normalised) so that HNSW has structure to find.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from app.store.base import SimilarFilters, point_id
from app.store.qdrant_edge import EdgeStore
from bench.live import start_process, stop_process

CATEGORIES = 20


CONTROL_TICKER = """
import sys, time
while True:
    t = time.perf_counter(); time.sleep(0.001); ms = (time.perf_counter() - t - 0.001) * 1e3
    if ms > 20:
        print(time.time(), ms, flush=True)
"""


@dataclass
class PhaseStats:
    latencies_ms: list[float] = field(default_factory=list)
    max_freeze_ms: float = 0.0
    freezes_over_50ms: int = 0
    freezes_over_100ms: int = 0
    started: float = 0.0
    ended: float = 0.0
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (wall end time, ms) over 20 ms
    max_gil_freeze_ms: float = 0.0
    gil_freezes_over_100ms: int = 0

    def attribute(self, control: list[tuple[float, float]]) -> None:
        """Keep the stalls that the control process did not share: those are GIL holds in here."""
        for end, ms in self.stalls:
            start = end - ms / 1e3
            shared = sum(max(0.0, min(end, c_end) - max(start, c_end - c_ms / 1e3)) for c_end, c_ms in control)
            if shared < 0.5 * (end - start):
                self.max_gil_freeze_ms = max(self.max_gil_freeze_ms, ms)
                self.gil_freezes_over_100ms += ms > 100

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.asarray([np.nan])
        return {
            "seconds": round(self.ended - self.started, 1),
            "reads": len(self.latencies_ms),
            "p50_ms": round(float(np.percentile(lat, 50)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3),
            "max_ms": round(float(np.max(lat)), 2),
            "max_freeze_ms": round(self.max_freeze_ms, 1),
            "freezes_over_50ms": self.freezes_over_50ms,
            "freezes_over_100ms": self.freezes_over_100ms,
            "max_gil_freeze_ms": round(self.max_gil_freeze_ms, 1),
            "gil_freezes_over_100ms": self.gil_freezes_over_100ms,
        }


class Recorder:
    """Latencies and ticker overshoots, attributed to the phase that was current when they ended."""

    def __init__(self) -> None:
        self.phases: dict[str, PhaseStats] = {}
        self.phase = "setup"
        self._lock = threading.Lock()
        self.stop = threading.Event()

    def enter(self, name: str) -> None:
        with self._lock:
            now = time.perf_counter()
            if self.phase in self.phases:
                self.phases[self.phase].ended = now
            self.phase = name
            self.phases[name] = PhaseStats(started=now)

    def read(self, ms: float) -> None:
        with self._lock:
            if self.phase in self.phases:
                self.phases[self.phase].latencies_ms.append(ms)

    def overshoot(self, ms: float) -> None:
        with self._lock:
            st = self.phases.get(self.phase)
            if st is None:
                return
            st.max_freeze_ms = max(st.max_freeze_ms, ms)
            st.freezes_over_50ms += ms > 50
            st.freezes_over_100ms += ms > 100
            if ms > 20:
                st.stalls.append((time.time(), ms))

    def ticker(self) -> None:
        while not self.stop.is_set():
            t = time.perf_counter()
            time.sleep(0.001)
            self.overshoot((time.perf_counter() - t - 0.001) * 1e3)


class GilHoldLog(logging.Handler):
    """Collects the store's own measurements of maintenance engine calls that hold the GIL."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.holds: list[tuple[str, float, float]] = []  # (what, wall ms, CPU ms)

    def emit(self, record: logging.LogRecord) -> None:
        if "held the GIL" in record.msg and isinstance(record.args, tuple) and len(record.args) == 3:
            what, ms, cpu_ms = record.args
            self.holds.append((str(what), float(ms), float(cpu_ms)))


class Data:
    """Deterministic clustered items: item i is the same whichever batch asks for it."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.centres = rng.standard_normal((256, dim)).astype(np.float32)
        self.seed = seed

    def batch(self, start: int, n: int) -> tuple[list[dict[str, Any]], np.ndarray]:
        rng = np.random.default_rng((self.seed, start))
        which = rng.integers(0, len(self.centres), n)
        v = self.centres[which] + 0.8 * rng.standard_normal((n, self.dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        payloads = [
            {
                "item_id": f"it-{i}",
                "title": f"item {i}",
                "category": f"c{i % CATEGORIES}",
                "price": float((i * 37) % 500),
                "seller_id": f"s{i % 997}",
                "status": "sold" if i % 10 == 0 else "on_sale",
            }
            for i in range(start, start + n)
        ]
        return payloads, v.astype(np.float32)


# ---------------------------------------------------------------- the two subjects


class LsmSubject:
    name = "lsm"

    def __init__(self, root: Path, dim: int, hot_max: int, fanin: int) -> None:
        self.store = EdgeStore(root, "bench", hot_max=hot_max, merge_fanin=fanin)
        self.store.open({"bench-model": dim})

    def upsert(self, payloads: list[dict[str, Any]], vectors: np.ndarray) -> None:
        self.store.upsert(payloads, vectors)

    def similar(self, item_id: str, k: int, f: SimilarFilters) -> None:
        self.store.similar(item_id, k, f)

    def settle(self, timeout_s: float) -> bool:
        return self.store.wait_for_maintenance(timeout_s)

    def stats(self) -> dict[str, Any]:
        st = self.store.stats()
        return {
            "builds": st["builds"],
            "merges": st["merges"],
            "freezes": st["freezes"],
            "failed_jobs": st["failed_jobs"],
            "shards": [(s["role"], s["points"], s["indexed_vectors"]) for s in st["shards"]],
        }

    def close(self) -> None:
        self.store.close()


class NaiveSubject:
    """One shard; a background thread calls optimize() after every hot_max new points."""

    name = "naive"

    def __init__(self, root: Path, dim: int, hot_max: int) -> None:
        from qdrant_edge import EdgeShard

        from app.store.qdrant_edge.builder import ALWAYS_INDEX_KB, create_payload_indexes, shard_config

        root.mkdir(parents=True, exist_ok=True)
        self.shard = EdgeShard.create(str(root / "naive"), shard_config(dim, indexing_threshold_kb=ALWAYS_INDEX_KB))
        create_payload_indexes(self.shard)
        self.hot_max = hot_max
        self.since = 0
        self.optimizes = 0
        self.optimize_s: list[float] = []
        self._wake = threading.Event()
        self._running = False
        self._stop = False
        self._thread = threading.Thread(target=self._optimizer, daemon=True)
        self._thread.start()

    def _optimizer(self) -> None:
        while not self._stop:
            if not self._wake.wait(0.2):
                continue
            self._running = True
            self._wake.clear()
            t = time.perf_counter()
            self.shard.optimize()
            self.optimize_s.append(time.perf_counter() - t)
            self.optimizes += 1
            self._running = False

    def upsert(self, payloads: list[dict[str, Any]], vectors: np.ndarray) -> None:
        from qdrant_edge import Point, UpdateOperation

        points = [Point(point_id(p["item_id"]), v.tolist(), p) for p, v in zip(payloads, vectors, strict=True)]
        self.shard.update(UpdateOperation.upsert_points(points))
        self.since += len(points)
        if self.since >= self.hot_max:
            self.since = 0
            self._wake.set()

    def similar(self, item_id: str, k: int, f: SimilarFilters) -> None:
        from qdrant_edge import FieldCondition, Filter, HasIdCondition, MatchValue, Query, QueryRequest

        pid = point_id(item_id)
        rec = self.shard.retrieve([pid], True, True)
        if not rec:
            return
        must = [FieldCondition("category", match=MatchValue(f.category))] if f.category else None
        flt = Filter(must=must, must_not=[HasIdCondition({pid}), FieldCondition("status", match=MatchValue("sold"))])
        self.shard.query(QueryRequest(limit=k, query=Query.Nearest(rec[0].vector), filter=flt, with_payload=True))

    def settle(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._wake.is_set() or self._running:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def stats(self) -> dict[str, Any]:
        info = self.shard.info()
        return {
            "optimizes": self.optimizes,
            "optimize_s": [round(s, 1) for s in self.optimize_s],
            "shards": [("single", info.points_count, info.indexed_vectors_count)],
        }

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.shard.flush()
        self.shard.close()


# ---------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.path) if args.path else Path(tempfile.mkdtemp(prefix="lookalike-bench-"))
    data = Data(args.dim)
    rec = Recorder()
    subject: LsmSubject | NaiveSubject
    if args.naive:
        subject = NaiveSubject(root, args.dim, args.hot_max)
    else:
        subject = LsmSubject(root, args.dim, args.hot_max, args.fanin)
    written: list[str] = []
    load_before = os.getloadavg()
    holds = GilHoldLog()
    store_log = logging.getLogger("lookalike.store.edge")
    store_log.addHandler(holds)
    store_log.setLevel(logging.DEBUG)
    control = start_process([sys.executable, "-c", CONTROL_TICKER], stdout=subprocess.PIPE, text=True)

    def reader() -> None:
        rnd = random.Random(1)
        while not rec.stop.is_set():
            if not written:
                time.sleep(0.01)
                continue
            item_id = written[rnd.randrange(len(written))]
            f = SimilarFilters(category=f"c{rnd.randrange(CATEGORIES)}") if rnd.random() < 0.3 else SimilarFilters()
            t = time.perf_counter()
            subject.similar(item_id, args.k, f)
            rec.read((time.perf_counter() - t) * 1e3)

    threads = [threading.Thread(target=rec.ticker, daemon=True), threading.Thread(target=reader, daemon=True)]
    t0 = time.perf_counter()
    try:
        rec.enter("seed")
        for t in threads:
            t.start()
        for start in tqdm(range(0, args.seed_items, 256), desc="seed", unit="batch", disable=args.quiet):
            n = min(256, args.seed_items - start)
            payloads, vectors = data.batch(start, n)
            subject.upsert(payloads, vectors)
            written.extend(p["item_id"] for p in payloads)
        subject.settle(args.max_wait_s)
        rec.enter("idle")
        time.sleep(args.idle_s)

        rec.enter("stream")
        interval = args.batch / args.rate
        next_at = time.perf_counter()
        lag_max = 0.0
        write_ms: list[float] = []
        total = args.items
        with tqdm(total=total, desc="stream", unit="item", disable=args.quiet) as bar:
            for start in range(args.seed_items, args.seed_items + total, args.batch):
                n = min(args.batch, args.seed_items + total - start)
                payloads, vectors = data.batch(start, n)
                t = time.perf_counter()
                subject.upsert(payloads, vectors)
                write_ms.append((time.perf_counter() - t) * 1e3)
                written.extend(p["item_id"] for p in payloads)
                bar.update(n)
                next_at += interval
                delay = next_at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                else:
                    lag_max = max(lag_max, -delay)
        rec.enter("drain")
        settled = subject.settle(args.max_wait_s)
        rec.enter("idle_after")
        time.sleep(args.idle_s)
        rec.enter("done")
    finally:
        rec.stop.set()
        control.terminate()
        control_out, _ = control.communicate()
        stop_process(control)
        for t in threads:
            t.join(timeout=5)
        stats = subject.stats()
        subject.close()
        if not args.path and not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    control_stalls = [(float(a), float(b)) for a, b in (line.split() for line in control_out.splitlines())]
    for st in rec.phases.values():
        st.attribute(control_stalls)
    phases = {name: st.summary() for name, st in rec.phases.items() if name not in ("done", "setup")}
    idle_p99 = phases["idle"]["p99_ms"]
    return {
        "mode": subject.name,
        "items_streamed": args.items,
        "seed_items": args.seed_items,
        "dim": args.dim,
        "rate_items_per_s": args.rate,
        "batch": args.batch,
        "hot_max": args.hot_max,
        "merge_fanin": args.fanin,
        "k": args.k,
        "writer_max_lag_s": round(lag_max, 2),
        "upsert_batch_p50_ms": round(float(np.percentile(write_ms, 50)), 2),
        "upsert_batch_p99_ms": round(float(np.percentile(write_ms, 99)), 2),
        "upsert_batch_max_ms": round(float(np.max(write_ms)), 1),
        "settled": settled,
        "wall_s": round(time.perf_counter() - t0, 1),
        "loadavg_before": [round(x, 1) for x in load_before],
        "loadavg_after": [round(x, 1) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "phases": phases,
        "stream_p99_over_idle_p99": round(phases["stream"]["p99_ms"] / idle_p99, 2) if idle_p99 else None,
        "stream_p99_over_idle_after_p99": round(phases["stream"]["p99_ms"] / phases["idle_after"]["p99_ms"], 2),
        "max_freeze_ms": max(p["max_freeze_ms"] for p in phases.values()),
        "max_freeze_ms_after_seed": max(p["max_freeze_ms"] for n, p in phases.items() if n != "seed"),
        "max_gil_freeze_ms_after_seed": max(p["max_gil_freeze_ms"] for n, p in phases.items() if n != "seed"),
        "maintenance_gil_holds_max_ms": round(max((ms for _, ms, _ in holds.holds), default=0.0), 1),
        "maintenance_gil_holds_max_cpu_ms": round(max((c for _, _, c in holds.holds), default=0.0), 1),
        "maintenance_gil_holds": [
            (w, round(ms), round(c)) for w, ms, c in sorted(holds.holds, key=lambda t: -t[1])[:8]
        ],
        "control_stalls_over_100ms": sum(ms > 100 for _, ms in control_stalls),
        "control_max_stall_ms": round(max((ms for _, ms in control_stalls), default=0.0), 1),
        **stats,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=20_000, help="items streamed while reads run")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--rate", type=float, default=200.0, help="items per second written")
    parser.add_argument("--batch", type=int, default=16, help="items per upsert call")
    parser.add_argument("--seed-items", type=int, default=None, help="bulk-loaded first (default: hot-max)")
    parser.add_argument("--hot-max", type=int, default=10_000)
    parser.add_argument("--fanin", type=int, default=4)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--max-wait-s", type=float, default=300.0, help="longest wait for maintenance")
    parser.add_argument("--naive", action="store_true", help="one shard, optimize() in-process")
    parser.add_argument("--path", help="data directory (default: a temporary one, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--log", action="store_true", help="log store maintenance to stderr")
    args = parser.parse_args(argv)
    if args.seed_items is None:
        args.seed_items = args.hot_max
    if args.log:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(message)s", stream=sys.stderr)
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"mode={result['mode']} items={args.items} (+{args.seed_items} seed) dim={args.dim} rate={args.rate}/s")
    print(
        f"{'phase':<11} {'reads':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'freeze ms':>10} {'>100ms':>7}"
        f" {'gil ms':>8} {'gil>100':>8}"
    )
    for name, p in result["phases"].items():
        print(
            f"{name:<11} {p['reads']:>7} {p['p50_ms']:>8.2f} {p['p99_ms']:>8.2f} {p['max_ms']:>8.1f} "
            f"{p['max_freeze_ms']:>10.1f} {p['freezes_over_100ms']:>7}"
            f" {p['max_gil_freeze_ms']:>8.1f} {p['gil_freezes_over_100ms']:>8}"
        )
    print(
        f"stream p99 / idle p99 = {result['stream_p99_over_idle_p99']}  "
        f"(/ idle_after p99 = {result['stream_p99_over_idle_after_p99']})"
    )
    print(
        f"max freeze after seed: {result['max_freeze_ms_after_seed']} ms "
        f"(not shared with the control process: {result['max_gil_freeze_ms_after_seed']} ms; "
        f"control process max stall {result['control_max_stall_ms']} ms); settled: {result['settled']}"
    )
    rest = {k: v for k, v in result.items() if k not in ("phases",)}
    print(json.dumps(rest, indent=None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
