"""bench/scale.py end to end on a small catalogue: the JSON it prints, and the store it keeps for others.

`python -m bench.scale` runs as a user runs it (a subprocess, its cache in a temporary folder seeded with
the session's tiny model); then the kept store is served again from the lines of its serve.env alone.
Timings are never asserted (they depend on the machine), only that every figure is there and sane.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.live import ROOT, live_server, run_process

ITEMS = 3000
KEYS = {
    "items",
    "dim",
    "import_seconds",
    "points_built",
    "shards",
    "recall_at_10",
    "recall_at_10_filtered",
    "http_p50_ms",
    "http_p99_ms",
    "rps_c1",
    "rps_c8",
    "rss_mb",
    "rss_mb_main",
    "rss_mb_children",
}


@pytest.fixture(scope="module")
def kept(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    cache = tmp_path_factory.mktemp("bench-cache")
    (cache / "models").mkdir()
    # The file bench.common.cached_model("tiny") would export (tiny config, seed 0, fp32).
    shutil.copy(tiny_model_path, cache / "models" / "siglip-tiny-fp32-seed0.onnx")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env.update({"BENCH_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"})
    keep = tmp_path_factory.mktemp("scale") / "kept"
    args = ["--items", str(ITEMS), "--dim", "32", "--json", "--keep", str(keep), "--shard-points", "1500"]
    result = run_process(
        [sys.executable, "-m", "bench.scale", *args, "--level-seconds", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout), keep  # stdout is exactly one JSON object; progress goes to stderr


def test_report_has_every_figure(kept: tuple[dict, Path]) -> None:
    report, _ = kept
    assert set(report) >= KEYS, KEYS - set(report)
    assert (report["items"], report["dim"]) == (ITEMS, 32)
    assert 0 < report["recall_at_10"] <= 1
    assert 0 < report["recall_at_10_filtered"] <= 1
    assert report["points_built"] == ITEMS  # the bulk load builds every vector once
    assert report["shards"] >= ITEMS // 1500
    # shared pages count once in rss_mb (the sum of Pss), in full in each process's own RSS
    assert 0 < report["rss_mb"] <= report["rss_mb_main"] + sum(report["rss_mb_children"]) + 1
    assert 0 < report["http_p50_ms"] <= report["http_p99_ms"]
    assert report["rps_c1"] > 0 and report["rps_c8"] > 0
    assert report["import_seconds"] > 0
    assert report["errors"] == 0
    assert report["reused_store"] is False
    assert set(report["targets"]["met"]) == {
        "recall_at_10",
        "recall_at_10_filtered",
        "http_p99_ms",
        "rps_c8",
        "points_built",
        "rss_mb",
    }


def test_kept_store_serves_from_its_env_file(kept: tuple[dict, Path]) -> None:
    report, keep = kept
    vectors = np.load(keep / "vectors.npy", mmap_mode="r")
    ids = json.loads((keep / "ids.json").read_text())
    assert vectors.shape == (ITEMS, 32) and vectors.dtype == np.float32 and len(ids) == ITEMS
    assert np.allclose(np.linalg.norm(vectors[:100], axis=1), 1, atol=1e-4)
    assert (keep / "model.onnx").is_file() and (keep / "qdrant").is_dir()

    lines = (keep / "serve.env").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if line.strip())
    assert all(name.startswith("LOOKALIKE_") for name in env)
    with live_server(env) as server:
        answer = httpx.get(f"{server.url}/similar/{ids[0]}", params={"k": 10}, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["item_id"] == ids[0] and body["model_version"] == report["model_version"]
        results = [r["item_id"] for r in body["results"]]
        assert len(results) == 10 and ids[0] not in results and set(results) <= set(ids)
        # The served neighbours are the nearest ones: their scores are the cosines of the kept vectors.
        top = body["results"][0]
        assert top["score"] == pytest.approx(
            float(vectors[0] @ vectors[ids.index(top["item_id"])]), abs=0.02
        )  # int8 search may rescore
