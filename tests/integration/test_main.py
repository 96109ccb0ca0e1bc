"""`python -m app` start-up: never a silent random model; clear messages for bad settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_app(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    clean.update({"HF_HUB_OFFLINE": "1", "LOOKALIKE_QDRANT_PATH": str(tmp_path / "q"), **env})
    return subprocess.run(
        [sys.executable, "-m", "app"], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=300
    )


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
