"""bench/import_rate.py end to end on a small catalogue (tiny model): the JSON it prints.

`python -m bench.import_rate` runs as a user runs it (a subprocess, its cache in a temporary folder seeded with
the session's tiny model): an in-process import, one through a running service, and a spot-checked import of a
generated catalogue whose photos are served on loopback. Timings are never asserted, only that every figure
is there and sane.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.live import ROOT, run_process

ITEMS, HTTP_ITEMS, CHECK = 2000, 500, 10


@pytest.fixture(scope="module")
def report(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    cache = tmp_path_factory.mktemp("bench-cache")
    (cache / "models").mkdir()
    # The file bench.common.cached_model("tiny") would export (tiny config, seed 0, fp32).
    shutil.copy(tiny_model_path, cache / "models" / "siglip-tiny-fp32-seed0.onnx")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env.update({"BENCH_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"})
    args = ["--items", str(ITEMS), "--dim", "32", "--http-items", str(HTTP_ITEMS), "--check", str(CHECK), "--json"]
    result = run_process(
        [sys.executable, "-m", "bench.import_rate", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not any((cache / "import_rate").iterdir())  # the work folder (Parquet files, stores) is removed
    return json.loads(result.stdout)  # stdout is exactly one JSON object; progress goes to stderr


def test_in_process_import_builds_every_vector_once(report: dict) -> None:
    assert (report["items"], report["dim"], report["http_items"]) == (ITEMS, 32, HTTP_ITEMS)
    assert report["model_version"].startswith("siglip-tiny-")
    local = report["in_process"]
    assert local["items"] == ITEMS and local["points"] == ITEMS
    assert report["points_built"] == local["points_built"] == ITEMS  # one sealed shard, built once
    assert report["shards"] == local["shards"] >= 1 and local["shard_roles"].get("sealed") == 1
    assert report["import_seconds"] == local["import_seconds"] >= local["command_reported_seconds"] > 0
    assert report["items_per_s"] == local["items_per_s"] > 0
    assert report["file_mb"] > 0


def test_http_import_counts_until_indexed(report: dict) -> None:
    remote = report["http"]
    assert remote["items"] == remote["points"] == HTTP_ITEMS  # every row written through the service
    assert remote["items_per_s"] > 0 and remote["indexed_items_per_s"] > 0
    parts = remote["import_seconds"] + remote["stop_seconds"] + remote["maintenance_seconds"]
    assert remote["indexed_seconds"] == pytest.approx(parts, abs=0.05)
    assert report["in_process_over_http"] == pytest.approx(
        report["items_per_s"] / remote["indexed_items_per_s"], rel=0.05
    )


def test_spot_check_cost(report: dict) -> None:
    checked = report["spot_check"]
    assert checked["embedded"] == checked["items"] == checked["catalog_items"]  # every photo fetched and embedded
    assert checked["rows_checked"] == checked["check"] == CHECK
    assert checked["embed_images_per_s"] > 0
    assert 0 <= checked["check_seconds"] <= checked["import_seconds"]
