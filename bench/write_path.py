"""POST /items throughput and latency, micro-batching on vs off, with the batch sizes the service ran.

    python -m bench.write_path --config tiny|base [--precision fp32|int8] [--levels 8,32] [--rounds N] [--json]

Two real services (`python -m app`, embedded store, CPU) run at once on the same model: one with the
default micro-batching (BATCH_MAX_SIZE / BATCH_MAX_WAIT_MS unset = the CPU defaults, 16 images and
50 ms), one with batching off (BATCH_MAX_SIZE=1). For each concurrency level (closed loop, bounded in
requests and seconds) the two are measured one right after the other, so their ratio is side by side
under the same machine load.
Each request is a JSON POST /items with a distinct photo-like JPEG (made in-process) as image_base64.
The batch-size distribution of each level is the difference of the lookalike_batch_size histogram
on /metrics before and after it. The service's resident memory (VmRSS, and its peak VmHWM) is read
from /proc after each level.

Targets: micro-batching >= 1.3x throughput on CPU at saturation; service RSS <= 1.5 GB with
the base model on CPU.
"""

from __future__ import annotations

import base64
import shutil
import statistics
import sys
import threading
from contextlib import ExitStack
from typing import Any

from bench.common import (
    base_parser,
    cache_dir,
    cached_model,
    closed_loop,
    emit,
    log,
    machine_info,
    machine_line,
    table,
)
from bench.live import LiveServer, running_service
from models.photos import textured_photo

TARGET_BATCHING_GAIN = 1.3
TARGET_RSS_BYTES = int(1.5 * 2**30)
# batching_on runs the service's own defaults ("auto": resolved from the device, CPU here)
MODES: dict[str, dict[str, str]] = {"batching_on": {}, "batching_off": {"LOOKALIKE_BATCH_MAX_SIZE": "1"}}


def batch_histogram(service: LiveServer) -> tuple[dict[str, float], float, float]:
    """Cumulative lookalike_batch_size buckets {le: count}, plus _sum and _count."""
    import httpx

    text = httpx.get(service.url + "/metrics", timeout=30).text
    buckets: dict[str, float] = {}
    total = count = 0.0
    for line in text.splitlines():  # summed over model versions (one series each)
        value = float(line.rsplit(" ", 1)[1]) if line.startswith("lookalike_batch_size_") else 0.0
        if line.startswith("lookalike_batch_size_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[le] = buckets.get(le, 0.0) + value
        elif line.startswith("lookalike_batch_size_sum"):
            total += value
        elif line.startswith("lookalike_batch_size_count"):
            count += value
    return buckets, total, count


def distribution(before: tuple[dict[str, float], float, float], after: tuple[dict[str, float], float, float]):
    """Batches run per batch-size bucket during one level ("<=N": count), and the mean batch size."""
    b_buckets, b_sum, b_count = before
    a_buckets, a_sum, a_count = after
    order = sorted(a_buckets, key=lambda le: float("inf") if le == "+Inf" else float(le))
    out: dict[str, int] = {}
    previous = 0.0
    for le in order:
        cumulative = a_buckets[le] - b_buckets.get(le, 0.0)
        if cumulative - previous > 0:
            label = "inf" if le == "+Inf" else str(int(float(le)))
            out[f"<={label}"] = int(cumulative - previous)
        previous = cumulative
    batches = a_count - b_count
    mean = (a_sum - b_sum) / batches if batches else 0.0
    return out, round(mean, 2), int(batches)


def measure_level(service: LiveServer, mode: str, concurrency: int, bodies: list[bytes], total: int, max_s: float):
    import httpx

    clients = [httpx.Client(base_url=service.url, timeout=120) for _ in range(concurrency)]
    counter = iter(range(10**9))
    lock = threading.Lock()

    def request(worker: int, i: int) -> bool:
        with lock:
            n = next(counter)
        body = bodies[n % len(bodies)].replace(b"@ID@", f"w-{mode}-c{concurrency}-{n}".encode())
        r = clients[worker].post("/items", content=body, headers={"content-type": "application/json"})
        return r.status_code in (200, 201)

    before = batch_histogram(service)
    cpu0 = service.cpu_s()
    try:
        res = closed_loop(
            request,
            concurrency=concurrency,
            total=total,
            max_s=max_s,
            warmup_per_worker=1,
            progress=f"POST /items {mode} c={concurrency}",
        )
    finally:
        for c in clients:
            c.close()
    cpu_s = service.cpu_s() - cpu0
    dist, mean_batch, batches = distribution(before, batch_histogram(service))
    s = res.summary()
    done = s["requests"] + s["errors"] + concurrency  # + the untimed warm-up request per connection
    memory = service.rss_bytes()
    return {
        "mode": mode,
        "concurrency": concurrency,
        "requests": s["requests"],
        "errors": s["errors"],
        "img_per_s": s["rps"],
        "p50_ms": s["p50_ms"],
        "p99_ms": s["p99_ms"],
        "cpu_ms_per_img": round(cpu_s * 1e3 / done, 1) if done else 0.0,
        "mean_batch": mean_batch,
        "batches": batches,
        "batch_sizes": dist,
        "rss_mb": round(memory.get("rss_bytes", 0) / 2**20),
        "peak_rss_mb": round(memory.get("peak_rss_bytes", 0) / 2**20),
    }


def mean_of(rows: list[dict[str, Any]], key: str) -> float:
    return round(statistics.fmean(r[key] for r in rows), 1)


def paired_gains(mine: list[dict[str, Any]], off: list[dict[str, Any]]) -> tuple[float, float]:
    """Median over rounds of (img/s mine / off) and (CPU ms per image off / mine), each pair one round."""
    pairs = list(zip(mine, off, strict=True))
    gains = [a["img_per_s"] / b["img_per_s"] for a, b in pairs if b["img_per_s"]]
    cpu = [b["cpu_ms_per_img"] / a["cpu_ms_per_img"] for a, b in pairs if a["cpu_ms_per_img"]]
    return (
        round(statistics.median(gains), 2) if gains else 0.0,
        round(statistics.median(cpu), 2) if cpu else 0.0,
    )


def make_bodies(count: int, side: int) -> list[bytes]:
    """JSON bodies with a placeholder item id, each carrying its own JPEG."""
    import json

    bodies = []
    for i in range(count):
        image = base64.b64encode(textured_photo(1000 + i, side, side)).decode()
        doc = {"item_id": "@ID@", "image_base64": image, "title": f"item {i}", "category": "bags", "price": 10 + i}
        bodies.append(json.dumps(doc).encode())
    return bodies


def run(
    *,
    config: str,
    precision: str,
    quick: bool,
    levels: list[int],
    requests: int,
    max_s: float,
    side: int,
    variants: dict[str, dict[str, str]] | None = None,
    rounds: int = 1,
) -> dict[str, Any]:
    machine = machine_info()
    model = cached_model(config, precision)
    log(f"making photo-like {side}x{side} JPEGs ...")
    bodies = make_bodies(8 if quick else 64, side)
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        services: dict[str, LiveServer] = {}
        modes = {**MODES, **(variants or {})}
        for mode, extra in modes.items():
            data = cache_dir("write-path") / f"{config}-{precision}-{mode}"
            stack.callback(shutil.rmtree, data, ignore_errors=True)
            shutil.rmtree(data, ignore_errors=True)
            env = {
                "LOOKALIKE_MODEL_PATH": str(model),
                "LOOKALIKE_QDRANT_PATH": str(data),
                "LOOKALIKE_DEVICE": "cpu",
                "LOOKALIKE_QUEUE_MAX": "1024",
                "LOOKALIKE_REQUEST_TIMEOUT_S": "300",
                **extra,
            }
            log(f"starting the service ({mode}) ...")
            services[mode] = stack.enter_context(running_service(env, name=f"write_path-{mode}"))
        idle = {mode: svc.rss_bytes() for mode, svc in services.items()}
        for concurrency in levels:
            for round_ in range(rounds):
                # Side by side at the same level: on then off, and off then on in the next round (ABBA),
                # so that a drift in the machine's load weighs on both modes alike.
                order = list(services.items())
                for mode, svc in order if round_ % 2 == 0 else reversed(order):
                    row = measure_level(svc, mode, concurrency, bodies, max(requests, 2 * concurrency), max_s)
                    rows.append({**row, "round": round_})
                    log(
                        f"{mode} c={concurrency} round {round_}: {row['img_per_s']} img/s, p50 {row['p50_ms']} ms, "
                        f"CPU {row['cpu_ms_per_img']} ms/img, mean batch {row['mean_batch']}"
                    )
    by: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["mode"], r["concurrency"]), []).append(r)
    ratios = []
    for concurrency in levels:
        on, off = by[("batching_on", concurrency)], by[("batching_off", concurrency)]
        gain, cpu_gain = paired_gains(on, off)
        ratios.append(
            {
                "concurrency": concurrency,
                "on_img_per_s": mean_of(on, "img_per_s"),
                "off_img_per_s": mean_of(off, "img_per_s"),
                "gain": gain,
                "cpu_gain": cpu_gain,
                "on_p50_ms": mean_of(on, "p50_ms"),
                "off_p50_ms": mean_of(off, "p50_ms"),
            }
        )
    peak_on = max(r["on_img_per_s"] for r in ratios)
    peak_off = max(r["off_img_per_s"] for r in ratios)
    saturation_gain = round(peak_on / peak_off, 2) if peak_off else 0.0
    peak_rss = max(r["peak_rss_mb"] for r in rows) * 2**20
    extra_rows = []
    for name in variants or {}:
        for concurrency in levels:
            mine, off = by[(name, concurrency)], by[("batching_off", concurrency)]
            gain, cpu_gain = paired_gains(mine, off)
            extra_rows.append(
                {
                    "mode": name,
                    "concurrency": concurrency,
                    "img_per_s": mean_of(mine, "img_per_s"),
                    "gain": gain,
                    "cpu_gain": cpu_gain,
                }
            )
    return {
        "benchmark": "write_path",
        "variants": {
            name: {"env": env, "gains_vs_off": [r for r in extra_rows if r["mode"] == name]}
            for name, env in (variants or {}).items()
        },
        "quick": quick,
        "machine": machine,
        "config": config,
        "precision": precision,
        "image_side": side,
        "levels": levels,
        "rounds": rounds,
        "rows": rows,
        "ratios": ratios,
        "saturation_img_per_s": {"batching_on": peak_on, "batching_off": peak_off},
        "batching_gain_at_saturation": saturation_gain,
        "idle_rss_bytes": {mode: m.get("rss_bytes", 0) for mode, m in idle.items()},
        "peak_rss_bytes": peak_rss,
        "targets": {
            "batching_gain_min": TARGET_BATCHING_GAIN,
            "batching_met": saturation_gain >= TARGET_BATCHING_GAIN,
            "rss_max_bytes": TARGET_RSS_BYTES,
            "rss_met": peak_rss <= TARGET_RSS_BYTES,
            "rss_applies": config == "base",
        },
    }


def render(r: dict[str, Any]) -> str:
    rows = [{**row, "batch_sizes": " ".join(f"{k}:{v}" for k, v in row["batch_sizes"].items())} for row in r["rows"]]
    t = r["targets"]
    return "\n".join(
        [
            f"write path: POST /items (JSON, base64 {r['image_side']}px JPEG), {r['config']} {r['precision']}, CPU",
            machine_line(r["machine"]),
            table(rows),
            table(r["ratios"]),
            *[
                f"variant {name} ({' '.join(f'{k}={v}' for k, v in v['env'].items())}) vs batching_off: "
                + ", ".join(f"c={g['concurrency']} {g['gain']}x (CPU/img {g['cpu_gain']}x)" for g in v["gains_vs_off"])
                for name, v in r["variants"].items()
            ],
            f"at saturation: on {r['saturation_img_per_s']['batching_on']} img/s vs off "
            f"{r['saturation_img_per_s']['batching_off']} img/s = {r['batching_gain_at_saturation']}x "
            f"(target >= {t['batching_gain_min']}x: {'met' if t['batching_met'] else 'MISSED'})",
            f"service peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MB "
            f"(target <= 1536 MB with the base model: "
            f"{('met' if t['rss_met'] else 'MISSED') if t['rss_applies'] else 'n/a for ' + r['config']})",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n")[0])
    parser.add_argument("--config", choices=("tiny", "base"), default=None, help="model size (default base)")
    parser.add_argument("--precision", choices=("fp32", "int8", "fp16"), default="fp32")
    parser.add_argument("--levels", default=None, help="comma-separated concurrency levels (default 1,2,4,8,16,32)")
    parser.add_argument("--requests", type=int, default=None, help="requests per level and mode (default 96)")
    parser.add_argument("--max-seconds", type=float, default=None, help="time bound per level and mode (default 25)")
    parser.add_argument("--side", type=int, default=None, help="JPEG width and height (default 800)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure each level this many times, alternating the order of the modes; gains are the median "
        "of the per-round ratios (default 1)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="also measure the service with this extra environment, side by side (repeatable)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    from bench.read_path import parse_variants

    result = run(
        variants=parse_variants(args.variant),
        config=args.config or ("tiny" if quick else "base"),
        precision=args.precision,
        quick=quick,
        levels=[int(c) for c in (args.levels or ("1,4" if quick else "1,2,4,8,16,32")).split(",")],
        requests=args.requests or (8 if quick else 96),
        max_s=args.max_seconds or (3.0 if quick else 25.0),
        side=args.side or (128 if quick else 800),
        rounds=max(1, args.rounds),
    )
    emit(result, args.json, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
