"""The layering of app/ (import-linter contracts in pyproject.toml) and what `python -m app` loads."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tests.live import run_process

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    # The entry point installed next to this interpreter (the dev extra), else the one on PATH.
    local = Path(sys.executable).with_name("lint-imports")
    lint_imports = str(local) if local.is_file() else shutil.which("lint-imports")
    assert lint_imports, "lint-imports is not installed (pip install -e '.[dev]')"
    result = run_process(
        [lint_imports, "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_service_import_graph_has_no_training_side() -> None:
    # Everything `python -m app` and `lookalike` import before and while serving.
    modules = ["app.__main__", "app.cli", "app.http.app", "app.service.runtime"]
    modules += ["app.store.qdrant_server", "app.store.qdrant_edge"]  # make_store imports one of them lazily
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'models', 'torch', 'transformers', 'onnx'}))\n"
    )
    result = run_process([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
