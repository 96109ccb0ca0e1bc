"""`lookalike demo` end to end: catalog, photo server, service with a freshly exported tiny model, indexed."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.live import ROOT, free_port


def test_demo_without_a_model_exports_tiny_indexes_by_url_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "LOOKALIKE_MODEL_PATH": str(tmp_path / "absent.onnx"), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "app.cli", "demo", "--items", "8", "--port", str(port), "--data", str(tmp_path)]
    out_file, err_file = tmp_path / "demo.out", tmp_path / "demo.err"  # files: a full pipe would block the demo
    with out_file.open("w") as out, err_file.open("w") as err:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=err, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        items: list[dict] = []
        deadline = time.monotonic() + 300
        while len(items) < 8 and time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                items = httpx.get(url + "/items", timeout=5).json()["items"]
            time.sleep(0.3)
        assert len(items) == 8, err_file.read_text()[-3000:]
        assert httpx.get(url + "/info", timeout=5).json()["random_weights"] is True
        photo = httpx.get(f"{url}/items/{items[0]['item_id']}/image", timeout=10, follow_redirects=True)
        assert photo.status_code == 200
        assert photo.content[:3] == b"\xff\xd8\xff"  # the catalog's JPEG, from the loopback photo server
        assert "Content-Security-Policy" in httpx.get(url + "/", timeout=5).headers
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == 0, err_file.read_text()[-3000:]
    assert f"Open the page: {url}/" in out_file.read_text()
    assert "RANDOM weights" in err_file.read_text()
    assert (tmp_path / "tiny-random.onnx").is_file()
    assert (tmp_path / "catalog-8-seed7" / "items.jsonl").is_file()
