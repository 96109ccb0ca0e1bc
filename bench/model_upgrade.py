"""What a model upgrade costs: writes with two active versions, backfill speed, reads during a backfill, kept bytes.

    python -m bench.model_upgrade [--config tiny|base] [--items N] [--reads N] [--reads-first-only] [--json] [--quick]

The second version is the same model file copied with another `model_version` in its metadata, so both versions
cost the same and the numbers isolate what the versioning adds. Real services (`python -m app`, embedded store,
CPU), items written as base64 JPEGs (their bytes go to the image store) through POST /items/batch:

- write cost: the same items written to a service with one active version and to one with two; CPU seconds of
  the service per item and encoder time (lookalike_inference_duration_seconds) per item. Expect ~2x encoder time.
- backfill throughput: the one-version catalog restarted with both files (the copy is a candidate missing every
  vector); partition 0/2 backfilled alone (POST /models/{v}/backfill?partition=0/2), items/s against the plain
  bulk indexing of the same items on the one-version service. Target >= 0.9x.
- GET /similar p99 while partition 1/2 is backfilled, against the same closed loop on the same service before
  any backfill. Target <= 1.5x. Run three times on copies of the same catalog, side by side (READS_FIRST_MODES):
  reads first off (LOOKALIKE_BACKFILL_YIELD_TO_READS=false, LOOKALIKE_ENCODER_NICE=0), pause only (the backfill
  pauses for reads, the encoder at normal priority) and on (the defaults: pause and the encoder's threads at a
  lower CPU priority), with the backfill's items/s alone and during the reads (what yielding costs it).
- image store disk per item (bytes on disk under <data>/images / items written from bytes).
"""

from __future__ import annotations

import base64
import shutil
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    KeepAliveClient,
    base_parser,
    cache_dir,
    cached_model,
    closed_loop,
    emit,
    log,
    machine_info,
    machine_line,
    percentile,
    table,
)
from bench.live import LiveServer, running_service
from models.photos import textured_photo

BATCH = 32
READ_CONCURRENCY = 4


def copy_with_version(source: Path, out: Path, version: str) -> Path:
    """The same weights under another model_version (metadata only)."""
    import onnx

    from app.core.model_contract import MODEL_VERSION_KEY

    model = onnx.load(str(source))
    for prop in model.metadata_props:
        if prop.key == MODEL_VERSION_KEY:
            prop.value = version
    onnx.save(model, str(out))
    return out


def metric_sum(url: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=30).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


def write_items(service: LiveServer, bodies: list[str]) -> float:
    """Write every item (batches of BATCH); seconds taken."""
    started = time.perf_counter()
    with httpx.Client(base_url=service.url, timeout=300) as client:
        for start in range(0, len(bodies), BATCH):
            items = [
                {"item_id": f"item-{i}", "image_base64": bodies[i]}
                for i in range(start, start + BATCH)
                if i < len(bodies)
            ]
            response = client.post("/items/batch", json={"items": items})
            response.raise_for_status()
            bad = [r for r in response.json()["results"] if r["status"] >= 300]
            if bad:
                raise RuntimeError(f"writes failed: {bad[:3]}")
    return time.perf_counter() - started


def write_cost(service: LiveServer, bodies: list[str]) -> dict[str, float]:
    cpu0, enc0 = service.cpu_s(), metric_sum(service.url, "lookalike_inference_duration_seconds_sum")
    wall = write_items(service, bodies)
    cpu, enc = service.cpu_s() - cpu0, metric_sum(service.url, "lookalike_inference_duration_seconds_sum") - enc0
    n = len(bodies)
    return {
        "items": n,
        "items_per_s": n / wall,
        "cpu_ms_per_item": 1000 * cpu / n,
        "encoder_ms_per_item": 1000 * enc / n,
    }


def read_loop(service: LiveServer, item_ids: list[str], total: int, max_s: float) -> dict[str, Any]:
    clients = [KeepAliveClient(service.host, service.port) for _ in range(READ_CONCURRENCY)]

    def request(worker: int, i: int) -> bool:
        status, _ = clients[worker].get(f"/similar/{item_ids[i % len(item_ids)]}?k=10")
        return status == 200

    try:
        result = closed_loop(request, concurrency=READ_CONCURRENCY, total=total, max_s=max_s, warmup_per_worker=3)
    finally:
        for c in clients:
            c.close()
    summary = result.summary()
    summary["http_p99_ms"] = 1000 * percentile(result.latencies_s, 99) if result.latencies_s else 0.0
    return summary


def backfill(client: httpx.Client, partition: str | None) -> dict[str, Any]:
    """Start (or, with None, follow the running) backfill of the copy; its final status."""
    path = "/models/upgrade-copy/backfill"
    if partition is not None:
        client.post(path, params={"partition": partition}).raise_for_status()
    deadline = time.monotonic() + 3600
    status = client.get(path).json()
    while status["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
        status = client.get(path).json()
    if status["state"] != "done":
        raise RuntimeError(f"the backfill ended {status['state']}: {status.get('error')}")
    return status


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


# How reads go first, side by side: (backfill pauses for reads, encoder threads' niceness)
READS_FIRST_MODES = {
    "off": (False, 0),  # neither: reads share the cores with every batch
    "pause": (True, 0),  # the backfill pauses its next image while reads run (batches on the encoder go on)
    "on": (True, None),  # that and the encoder at LOOKALIKE_ENCODER_NICE (the default): reads take the cores first
}


def default_encoder_nice() -> int:
    from app.core.settings import Settings

    return int(Settings.model_fields["encoder_nice"].default)


def backfill_with_reads(
    env: dict[str, str], catalog: Path, ids: list[str], reads: int, max_s: float, mode: str
) -> dict[str, Any]:
    """On a copy of the one-version catalog restarted with both files: GET /similar idle, then partition 0/2
    backfilled alone (items/s), then partition 1/2 backfilled while the same read loop runs."""
    yield_to_reads, nice = READS_FIRST_MODES[mode]
    work = catalog.parent.parent / f"reads-first-{mode}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(catalog.parent, work)
    flag = {"LOOKALIKE_BACKFILL_YIELD_TO_READS": str(yield_to_reads).lower()}
    if nice is not None:
        flag["LOOKALIKE_ENCODER_NICE"] = str(nice)
    env = {**env, **flag, "LOOKALIKE_QDRANT_PATH": str(work / catalog.name)}
    name = f"upgrade-backfill-{mode}"
    with running_service(env, name=name) as svc, httpx.Client(base_url=svc.url, timeout=60) as client:
        idle = read_loop(svc, ids, reads, max_s)  # same service, before the backfill: the idle baseline
        alone = backfill(client, "0/2")
        client.post("/models/upgrade-copy/backfill", params={"partition": "1/2"}).raise_for_status()
        started = time.perf_counter()
        during = read_loop(svc, ids, reads, max_s)
        status = client.get("/models/upgrade-copy/backfill").json()
        during_s = time.perf_counter() - started
        with_reads = backfill(client, None)
    alone_s = alone["finished_at"] - alone["started_at"]
    return {
        "backfill_yield_to_reads": yield_to_reads,
        "encoder_nice": nice if nice is not None else default_encoder_nice(),
        "reads_idle": idle,
        "reads_during_backfill": during,
        "similar_p99_ratio": during["http_p99_ms"] / max(idle["http_p99_ms"], 1e-9),
        "backfill_items_per_s": alone["embedded"] / alone_s,  # alone, no reads
        "backfill_items_per_s_during_reads": status["embedded"] / during_s,
        "backfill_still_running_after_reads": status["state"] == "running",
        "backfill_embedded": alone["embedded"] + with_reads["embedded"],
    }


def run(config: str, items: int, reads: int, max_s: float, reads_first_only: bool = False) -> dict[str, Any]:
    work = cache_dir("model_upgrade")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    v1 = cached_model(config)
    v2 = copy_with_version(v1, work / "copy.onnx", "upgrade-copy")
    from app.core.model_contract import read_model_file

    v1_version = read_model_file(v1).model_version
    log(f"making {items} photos ...")
    bodies = [base64.b64encode(textured_photo(seed, 640, 480, 85)).decode("ascii") for seed in range(items)]
    ids = [f"item-{i}" for i in range(items)]
    common = {"LOOKALIKE_DEVICE": "cpu", "LOOKALIKE_REQUEST_TIMEOUT_S": "300"}  # loaded machine: wait, no 429

    one_dir, two_dir = work / "one" / "qdrant", work / "two" / "qdrant"
    log("writes with one active version ...")
    with running_service(
        {**common, "LOOKALIKE_MODEL_PATH": str(v1), "LOOKALIKE_QDRANT_PATH": str(one_dir)}, name="upgrade-one"
    ) as one:
        one_cost = write_cost(one, bodies)
        idle = read_loop(one, ids, reads, max_s)
        memory_one = one.rss_bytes()
    two_cost: dict[str, float] = {}
    memory_two: dict[str, int] = {}
    if not reads_first_only:
        log("writes with two active versions ...")
        env_two = {**common, "LOOKALIKE_MODEL_PATH": f"{v1},{v2}", "LOOKALIKE_QDRANT_PATH": str(two_dir)}
        with running_service(env_two, name="upgrade-two") as two:
            two_cost = write_cost(two, bodies)
            memory_two = two.rss_bytes()

    both = {**common, "LOOKALIKE_MODEL_PATH": f"{v1},{v2}"}
    modes = {}
    for mode in READS_FIRST_MODES:
        log(f"backfill of the copy, half alone, half with reads (reads first: {mode}) ...")
        modes[mode] = backfill_with_reads(both, one_dir, ids, reads, max_s, mode)
    on = modes["on"]
    images = one_dir.parent / "images"
    result: dict[str, Any] = {
        "benchmark": "model_upgrade",
        "config": config,
        "model_version": v1_version,
        "items": items,
        "machine": machine_info(),
        "write_one_version": one_cost,
        "bulk_items_per_s": one_cost["items_per_s"],
        "backfill_items_per_s": on["backfill_items_per_s"],
        "backfill_vs_bulk": on["backfill_items_per_s"] / one_cost["items_per_s"],
        "reads_idle_first_service": idle,
        "reads_first": modes,
        "similar_p99_ratio": on["similar_p99_ratio"],
        "similar_p99_ratio_without_reads_first": modes["off"]["similar_p99_ratio"],
        "similar_p99_ratio_pause_only": modes["pause"]["similar_p99_ratio"],
        "image_store_bytes_per_item": disk_bytes(images) / items,
        "memory_one_version": memory_one,
        "targets": {
            "backfill_vs_bulk_met": on["backfill_items_per_s"] / one_cost["items_per_s"] >= 0.9,
            "similar_p99_met": on["similar_p99_ratio"] <= 1.5,
        },
    }
    if two_cost:
        result |= {
            "write_two_versions": two_cost,
            "encoder_time_ratio": two_cost["encoder_ms_per_item"] / one_cost["encoder_ms_per_item"],
            "cpu_ratio": two_cost["cpu_ms_per_item"] / one_cost["cpu_ms_per_item"],
            # the service's resident memory after the writes (now and at its peak), one model file vs two
            "memory_two_versions": memory_two,
        }
    return result


def render(r: dict[str, Any]) -> str:
    rows = [{"active versions": 1, **r["write_one_version"]}]
    if "write_two_versions" in r:
        rows.append({"active versions": 2, **r["write_two_versions"]})
    reads = []
    for mode, m in r["reads_first"].items():
        for when in ("idle", "during_backfill"):
            sample = m[f"reads_{when}"]
            reads.append(
                {
                    "reads first": mode,
                    "when": when.replace("_", " "),
                    **{k: sample[k] for k in ("requests", "errors", "rps", "p50_ms", "http_p99_ms")},
                }
            )
    lines = [
        machine_line(r["machine"]),
        table(rows, title=f"writes ({r['config']} model, {r['items']} items, batches of {BATCH})"),
    ]
    if "write_two_versions" in r:
        ratios = f"encoder time 2 versions / 1: {r['encoder_time_ratio']:.2f}x   service CPU: {r['cpu_ratio']:.2f}x"
        lines.append(ratios)
    lines += [
        f"backfill {r['backfill_items_per_s']:.1f} items/s vs bulk indexing {r['bulk_items_per_s']:.1f} items/s: "
        f"{r['backfill_vs_bulk']:.2f}x (target >= 0.9x)",
        table(reads, title=f"GET /similar, {READ_CONCURRENCY} clients, idle vs during a backfill"),
    ]
    for mode, m in r["reads_first"].items():
        lines.append(
            f"reads first {mode}: p99 during backfill / idle {m['similar_p99_ratio']:.2f}x (target <= 1.5x); "
            f"backfill {m['backfill_items_per_s']:.1f} items/s alone, {m['backfill_items_per_s_during_reads']:.1f} "
            f"during the reads (still running after them: {str(m['backfill_still_running_after_reads']).lower()})"
        )
    lines.append(f"image store: {r['image_store_bytes_per_item']:.0f} bytes on disk per item written from bytes")
    memory = "service RSS / peak, MB: one version " + " / ".join(
        f"{v / 2**20:.0f}" for v in r["memory_one_version"].values()
    )
    if "memory_two_versions" in r:
        memory += ", two versions " + " / ".join(f"{v / 2**20:.0f}" for v in r["memory_two_versions"].values())
    lines.append(memory)
    return "\n".join(lines)


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny", choices=("tiny", "base"))
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument(
        "--reads-first-only", action="store_true", help="skip the two-version write cost; only reads vs a backfill"
    )
    args = parser.parse_args()
    items, reads, max_s = (48, 200, 20.0) if args.quick else (args.items, args.reads, 120.0)
    emit(run(args.config, items, reads, max_s, args.reads_first_only), args.json, render)


if __name__ == "__main__":
    main()
