"""The builder child imports the very `app` package its parent runs, wherever the parent runs from."""

from __future__ import annotations

import sys
from pathlib import Path

import app
from app.store.qdrant_edge.jobs import BUILDER_MODULE, builder_env
from tests.live import run_process


def test_child_resolves_app_like_the_parent_from_any_directory(tmp_path: Path) -> None:
    # From an unrelated directory, with this process's import path: the same app/ as here (a git
    # worktree under test, not whatever checkout the venv's editable install points at).
    done = run_process(
        [sys.executable, "-c", f"import {BUILDER_MODULE} as b, app; print(app.__file__); print(b.__file__)"],
        cwd=tmp_path,
        env=builder_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    app_file, builder_file = done.stdout.split()
    assert app_file == app.__file__
    assert Path(builder_file) == Path(app.__file__).parent / "store" / "qdrant_edge" / "builder.py"
