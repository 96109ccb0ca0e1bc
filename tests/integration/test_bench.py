"""Every bench/ script runs in --quick mode and prints one well-formed JSON object.

Only the shape is checked (keys and types): timings depend on the machine and are never asserted
(see BENCHMARKS.md). The scripts run as a user runs them (`python -m bench.X --quick --json`), with their cache
in a temporary folder seeded with the session's tiny model.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from app.core.settings import Settings
from tests.live import run_process

ROOT = Path(__file__).resolve().parents[2]
NUMBER = (int, float)


@pytest.fixture(scope="module")
def bench_env(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("bench-cache")
    (cache / "models").mkdir()
    # The same model bench.common.cached_model("tiny") would export (tiny config, seed 0, fp32).
    shutil.copy(tiny_model_path, cache / "models" / "siglip-tiny-fp32-seed0.onnx")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env.update({"BENCH_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"})
    return env


def run_quick(module: str, env: dict[str, str], *args: str) -> dict[str, Any]:
    result = run_process(
        [sys.executable, "-m", f"bench.{module}", "--quick", "--json", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)  # stdout is exactly one JSON object; progress goes to stderr
    assert isinstance(report, dict)
    return report


def check(obj: dict[str, Any], schema: dict[str, Any]) -> None:
    """Each key present with a value of the given type(s); a dict value in the schema recurses."""
    for key, kind in schema.items():
        assert key in obj, f"missing key {key!r} in {sorted(obj)}"
        if isinstance(kind, dict):
            assert isinstance(obj[key], dict), key
            check(obj[key], kind)
        else:
            value = obj[key]
            assert isinstance(value, kind), f"{key}: {type(value).__name__} is not {kind}"
            if bool not in (kind if isinstance(kind, tuple) else (kind,)):
                assert not isinstance(value, bool), f"{key}: a bool where a {kind} is expected"


MACHINE = {"cpu": str, "cores": int, "loadavg_1m": NUMBER, "date": str}


def test_read_path_quick(bench_env: dict[str, str]) -> None:
    r = run_quick("read_path", bench_env)
    check(
        r,
        {
            "benchmark": str,
            "items": int,
            "dim": int,
            "machine": MACHINE,
            "http_p50_ms": NUMBER,
            "http_p99_ms": NUMBER,
            "rps": NUMBER,
            "store_p50_ms": NUMBER,
            "local_mode_p50_ms": NUMBER,
            "speedup_vs_local_mode": NUMBER,
            "service_rss_bytes": int,
            "store_layout": list,
            "targets": {"http_p99_met": bool, "speedup_met": bool},
        },
    )
    assert r["benchmark"] == "read_path" and r["dim"] == 32 and r["items"] > 0
    assert set(r["concurrency"]) == {"1", "8"}
    for level in r["concurrency"].values():
        check(level, {"requests": int, "errors": int, "rps": NUMBER, "http_p50_ms": NUMBER, "http_p99_ms": NUMBER})
        assert level["requests"] > 0 and level["errors"] == 0
    assert sum(s["points"] for s in r["store_layout"]) == r["items"]


def test_write_path_quick(bench_env: dict[str, str]) -> None:
    r = run_quick("write_path", bench_env, "--config", "tiny")
    check(
        r,
        {
            "benchmark": str,
            "config": str,
            "machine": MACHINE,
            "rows": list,
            "ratios": list,
            "batching_gain_at_saturation": NUMBER,
            "peak_rss_bytes": int,
            "targets": {"batching_met": bool, "rss_met": bool},
        },
    )
    assert {(row["mode"], row["concurrency"]) for row in r["rows"]} == {
        (mode, c) for mode in ("batching_on", "batching_off") for c in r["levels"]
    }
    for row in r["rows"]:
        check(row, {"img_per_s": NUMBER, "p50_ms": NUMBER, "p99_ms": NUMBER, "mean_batch": NUMBER, "batch_sizes": dict})
        assert row["requests"] > 0 and row["errors"] == 0
        assert all(k.startswith("<=") and isinstance(v, int) for k, v in row["batch_sizes"].items())
    off = [row for row in r["rows"] if row["mode"] == "batching_off"]
    assert all(set(row["batch_sizes"]) <= {"<=1"} for row in off)  # max batch 1 really ran batches of 1


def test_decode_quick(bench_env: dict[str, str]) -> None:
    r = run_quick("decode", bench_env)
    check(r, {"benchmark": str, "machine": MACHINE, "variants": list, "recommended": str, "simplejpeg_available": bool})
    names = {v["variant"] for v in r["variants"]}
    assert {"full", "draft"} <= names and r["recommended"] in names
    for v in r["variants"]:
        check(v, {"p50_ms": NUMBER, "speedup_vs_full": NUMBER, "min_cosine": NUMBER, "mean_cosine": NUMBER})
        assert -1.0 <= v["min_cosine"] <= 1.0 + 1e-6


def test_encoder_quick(bench_env: dict[str, str]) -> None:
    r = run_quick("encoder", bench_env)
    check(
        r,
        {
            "benchmark": str,
            "machine": MACHINE,
            "rows": list,
            "summary": list,
            "int8_speedup": NUMBER,
            "int8_min_cosine": NUMBER,
            "defaults": {"cpu": str, "cuda": str},
            "targets": {"met": bool},
        },
    )
    variants = {s["variant"] for s in r["summary"]}
    assert {"ort_fp32", "ort_int8", "ort_fp16", "torch_eager_fp32"} <= variants
    for row in r["rows"]:
        check(row, {"variant": str, "batch": int, "best_ms_per_img": NUMBER, "img_per_s": NUMBER})


def test_gpu_quick_is_well_formed_with_or_without_cuda(bench_env: dict[str, str]) -> None:
    r = run_quick("gpu", bench_env)
    check(r, {"benchmark": str, "machine": MACHINE, "cuda_available": bool, "reason": str, "devices": list})
    if r["cuda_available"]:
        check(r["encoder"], {"rows": list, "summary": list, "skipped": dict})
    else:
        assert r["reason"] and r["encoder"] is None and r["e2e"] is None


def test_burst_memory_quick(bench_env: dict[str, str]) -> None:
    r = run_quick("burst_memory", bench_env)
    check(
        r,
        {
            "benchmark": str,
            "machine": MACHINE,
            "count": int,
            "form": str,
            "image_bytes": int,
            "idle_rss_bytes": int,
            "peak_rss_bytes": int,
            "answered_2xx": int,
            "answered_429": int,
            "other": dict,
            "wall_s": NUMBER,
        },
    )
    assert r["benchmark"] == "burst_memory" and r["count"] > 0
    # every write is answered, 2xx or 429 (admission), never a 5xx or a cut connection
    assert r["answered_2xx"] + r["answered_429"] == r["count"], r["other"]
    assert r["peak_rss_bytes"] >= r["idle_rss_bytes"] > 0


def test_experiments_quick(bench_env: dict[str, str]) -> None:
    r = run_quick("experiments", bench_env)
    check(r, {"machine": MACHINE})
    check(r["report"], {"events": int, "report_s": NUMBER, "render_html_s": NUMBER, "served": int, "units": int})
    check(r["append"], {"batches": int, "batch_size": int, "events_per_s": int, "append_only_events_per_s": int})
    assert r["report"]["served"] == r["report"]["events"] // 12 and r["append"]["batch_size"] == 100


def test_model_upgrade_quick(bench_env: dict[str, str]) -> None:
    r = run_quick("model_upgrade", bench_env)
    cost = {"items": int, "items_per_s": NUMBER, "cpu_ms_per_item": NUMBER, "encoder_ms_per_item": NUMBER}
    reads = {"requests": int, "errors": int, "rps": NUMBER, "p50_ms": NUMBER, "http_p99_ms": NUMBER}
    mode = {
        "backfill_yield_to_reads": bool,
        "encoder_nice": int,
        "reads_idle": reads,
        "reads_during_backfill": reads,
        "similar_p99_ratio": NUMBER,
        "backfill_items_per_s": NUMBER,
        "backfill_items_per_s_during_reads": NUMBER,
        "backfill_still_running_after_reads": bool,
        "backfill_embedded": int,
    }
    check(
        r,
        {
            "benchmark": str,
            "items": int,
            "machine": MACHINE,
            "write_one_version": cost,
            "write_two_versions": cost,
            "encoder_time_ratio": NUMBER,
            "bulk_items_per_s": NUMBER,
            "backfill_items_per_s": NUMBER,
            "backfill_vs_bulk": NUMBER,
            "reads_first": {"off": mode, "pause": mode, "on": mode},
            "similar_p99_ratio": NUMBER,
            "similar_p99_ratio_without_reads_first": NUMBER,
            "similar_p99_ratio_pause_only": NUMBER,
            "image_store_bytes_per_item": NUMBER,
            "memory_one_version": {"rss_bytes": int, "peak_rss_bytes": int},
            "memory_two_versions": {"rss_bytes": int, "peak_rss_bytes": int},
            "targets": {"backfill_vs_bulk_met": bool, "similar_p99_met": bool},
        },
    )
    assert r["benchmark"] == "model_upgrade"
    for m in r["reads_first"].values():  # each way of reads first on its own copy of the catalog
        assert m["backfill_embedded"] == r["items"]  # both partitions filled every item of the catalog
        assert m["reads_idle"]["errors"] == m["reads_during_backfill"]["errors"] == 0
    assert [m["backfill_yield_to_reads"] for m in r["reads_first"].values()] == [False, True, True]
    assert [m["encoder_nice"] for m in r["reads_first"].values()] == [0, 0, Settings().encoder_nice]
    assert r["image_store_bytes_per_item"] > 0


def test_experiments_http_quick(bench_env: dict[str, str]) -> None:
    r = run_quick("experiments_http", bench_env)
    check(r, {"machine": MACHINE, "items": int, "p99_overhead_ms": NUMBER})
    latency = {"p50_ms": NUMBER, "p99_ms": NUMBER, "max_ms": NUMBER}
    check(r["similar"], {"outside": latency, "inside": latency})
    check(r["events"], {"batches": int, "events": int, "accepted": int, "events_per_s": NUMBER})
    assert r["events"]["accepted"] == r["events"]["events"] == 100 * r["events"]["batches"]


def test_several_photos_quick(bench_env: dict[str, str]) -> None:
    r = run_quick("several_photos", bench_env)
    check(r, {"benchmark": str, "machine": MACHINE, "catalogs": list})
    assert [c["catalog"] for c in r["catalogs"]] == ["clustered", "random"]
    for c in r["catalogs"]:
        check(c, {"listings": int, "photos": int, "recall_at_10": NUMBER, "p99_ratio_5_vs_1": NUMBER})
        assert c["photos"] > c["listings"] > 0 and 0 <= c["recall_at_10"] <= 1
