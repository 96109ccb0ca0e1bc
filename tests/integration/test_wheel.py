"""The wheel holds the service (app/, with its static page) and the model tooling (models/), nothing else.

bench/ and tests/ run from a checkout only: a top-level package named `bench` or `tests` in site-packages
would clash with other installs. The build runs offline on a copy of the checkout (no build isolation, so
pip fetches nothing; the copy keeps build/ and *.egg-info out of the working tree).
"""

from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path

from tests.live import run_process

ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", "data", ".bench-cache", ".*_cache", "*.onnx"
)


def test_wheel_holds_app_and_models_but_not_bench_or_tests(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=SKIP)
    out = tmp_path / "wheels"
    command = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--no-index"]
    result = run_process(
        [*command, "-w", str(out)], cwd=source, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr

    [wheel] = out.glob("lookalike-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}

    assert top_level == {"app", "models"}, sorted(top_level)
    assert "app/__main__.py" in names
    assert "app/http/static/index.html" in names  # package data travels with the code
    assert "models/export.py" in names and "models/photos.py" in names
    assert not any(name.startswith(("bench/", "tests/")) for name in names)
