"""`python -m app` start-up: never a silent random model; clear messages for bad settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.live import free_port, run_process, start_process, stop_process, wait_ready

ROOT = Path(__file__).resolve().parents[2]


def run_app(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    clean.update({"HF_HUB_OFFLINE": "1", "LOOKALIKE_QDRANT_PATH": str(tmp_path / "q"), **env})
    return run_process([sys.executable, "-m", "app"], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=300)


def test_missing_model_without_hub_stops_with_instructions(tmp_path: Path) -> None:
    model = tmp_path / "nowhere" / "siglip.onnx"
    result = run_app(tmp_path, LOOKALIKE_MODEL_PATH=str(model))
    assert result.returncode == 2
    assert "LOOKALIKE_MODEL_PATH" in result.stderr
    assert "python -m models.export --checkpoint" in result.stderr
    assert not model.exists()  # no random-weight model was made behind the user's back


def test_unknown_setting_stops_start_up(tmp_path: Path) -> None:
    result = run_app(tmp_path, LOOKALIKE_PROT="9000")
    assert result.returncode == 2
    assert "LOOKALIKE_PROT" in result.stderr
    assert "LOOKALIKE_PORT" in result.stderr


def test_file_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"definitely not onnx")
    result = run_app(tmp_path, LOOKALIKE_MODEL_PATH=str(fake))
    assert result.returncode == 2
    assert "could not load" in result.stderr


def test_without_the_export_tools_start_up_says_how_to_get_a_model(tmp_path: Path) -> None:
    # A runtime install without the `train` extra: torch cannot be found (None in sys.modules hides it).
    model = tmp_path / "siglip.onnx"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    clean.update({"LOOKALIKE_MODEL_PATH": str(model), "LOOKALIKE_QDRANT_PATH": str(tmp_path / "q")})
    code = "import sys; sys.modules['torch'] = None; from app.__main__ import main; sys.exit(main())"
    result = run_process([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "the export tools are not installed here: no torch" in result.stderr
    assert "pip install -e '.[train]'" in result.stderr
    assert "exporting" not in result.stderr  # no export was started
    assert not model.exists()


def test_missing_model_is_exported_from_model_source_then_served(tmp_path: Path) -> None:
    # A SigLIP vision checkpoint on disk (tiny, seeded), as a fine-tune would leave one.
    import torch
    from transformers import SiglipVisionConfig, SiglipVisionModel

    from app.core.model_contract import read_model_file
    from models.export import CONFIGS

    checkpoint = tmp_path / "checkpoint"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        SiglipVisionModel(SiglipVisionConfig(**CONFIGS["tiny"])).save_pretrained(checkpoint)
    model = tmp_path / "exported" / "siglip.onnx"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env.update(
        HF_HUB_OFFLINE="1",
        LOOKALIKE_HOST="127.0.0.1",
        LOOKALIKE_PORT=str(port),
        LOOKALIKE_MODEL_PATH=str(model),
        LOOKALIKE_MODEL_SOURCE=str(checkpoint),
        LOOKALIKE_QDRANT_PATH=str(tmp_path / "q"),
        LOOKALIKE_DEVICE="cpu",
    )
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        process = start_process([sys.executable, "-m", "app"], cwd=ROOT, env=env, stderr=stderr, text=True)
        try:
            wait_ready(f"http://127.0.0.1:{port}", process, timeout_s=240)
            served = True
        except (RuntimeError, TimeoutError):
            served = False
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            finally:
                stop_process(process)
    output = log.read_text()

    assert served and process.returncode == 0, output
    assert f"exporting {checkpoint}" in output
    assert "model_version  checkpoint-fp32-" in output  # the export's summary, streamed to stderr
    assert read_model_file(model).source == str(checkpoint)


def test_a_bad_experiments_file_stops_start_up_with_one_line(tmp_path: Path, tiny_model_path: Path) -> None:
    path = tmp_path / "experiments.yaml"
    path.write_text(  # a model version the collection does not have: the registry refuses it (409)
        "experiments:\n  - name: from-file\n    unit: user\n    variants:\n"
        "      - {name: control, model_version: nowhere-v1, weight: 1}\n"
        "      - {name: treatment, model_version: nowhere-v2, weight: 1}\n"
    )
    result = run_app(tmp_path, LOOKALIKE_MODEL_PATH=str(tiny_model_path), LOOKALIKE_EXPERIMENTS_FILE=str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.startswith("lookalike: ")]
    assert "nowhere-v1" in line  # names the version it refused


def test_a_collection_of_another_model_stops_start_up_with_one_line(tmp_path: Path, tiny_model_path: Path) -> None:
    from app.store.qdrant_edge import EdgeStore

    store = EdgeStore(tmp_path / "q", "items")  # what run_app's LOOKALIKE_QDRANT_PATH names
    store.open({"other-v1": 8})  # a collection made by another model, which no file here provides
    store.close()
    result = run_app(tmp_path, LOOKALIKE_MODEL_PATH=str(tiny_model_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.startswith("lookalike: ")]
    assert "'other-v1'" in line


def test_the_experiments_file_is_applied_once_and_served(tmp_path: Path, tiny_model_path: Path) -> None:
    import httpx

    from app.core.model_contract import read_model_file

    version = read_model_file(tiny_model_path).model_version
    path = tmp_path / "experiments.yaml"
    path.write_text(  # an empty collection: every version covers all of its (no) items
        "experiments:\n  - name: from-file\n    unit: user\n    variants:\n"
        f"      - {{name: control, model_version: {version}, weight: 1}}\n"
        f"      - {{name: treatment, model_version: {version}, weight: 1}}\n"
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env.update(
        LOOKALIKE_PORT=str(port),
        LOOKALIKE_MODEL_PATH=str(tiny_model_path),
        LOOKALIKE_QDRANT_PATH=str(tmp_path / "q"),
        LOOKALIKE_EXPERIMENTS_FILE=str(path),
        LOOKALIKE_DEVICE="cpu",
    )
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stderr=stderr, text=True)
        try:
            wait_ready(f"http://127.0.0.1:{port}", process, timeout_s=120)
            experiments = httpx.get(f"http://127.0.0.1:{port}/experiments", timeout=10).json()["experiments"]
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    output = log.read_text()
    assert process.returncode == 0, output
    assert [(e["name"], e["state"]) for e in experiments] == [("from-file", "running")]
    assert len([x for x in output.splitlines() if f"experiments file {path}: from-file" in x]) == 1, output
