"""Rooms whose size shows their job: no module of app/ or models/ over 400 lines, no function over 60."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def sources() -> list[Path]:
    return sorted(p for package in ("app", "models") for p in (ROOT / package).rglob("*.py"))


def too_long(path: Path, root: Path = ROOT) -> list[str]:
    """What in one file is over the limits, as `path: what (lines)`."""
    text = path.read_text(encoding="utf-8")
    where = path.relative_to(root).as_posix()
    found = []
    lines = len(text.splitlines())
    if lines > MAX_MODULE_LINES:
        found.append(f"{where}: module ({lines} lines)")
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            length = (node.end_lineno or node.lineno) - start + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{where}:{node.lineno}: function {node.name} ({length} lines)")
    return found


def test_the_walk_finds_the_sources() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in sources()}
    assert {"app/service/runtime.py", "app/http/app.py", "models/export.py"} <= names


def test_the_check_sees_a_long_function_and_a_long_module(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long_function.py").write_text(f"@staticmethod\ndef f() -> None:\n{body}\n", encoding="utf-8")
    (tmp_path / "long_module.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1), encoding="utf-8")
    (tmp_path / "fits.py").write_text(f"def f() -> None:\n{body[: body.rindex(chr(10))]}\n", encoding="utf-8")
    assert too_long(tmp_path / "long_function.py", tmp_path) == [
        f"long_function.py:2: function f ({MAX_FUNCTION_LINES + 2} lines)"
    ]
    assert too_long(tmp_path / "long_module.py", tmp_path) == [f"long_module.py: module ({MAX_MODULE_LINES + 1} lines)"]
    assert too_long(tmp_path / "fits.py", tmp_path) == []


def test_no_module_over_400_lines_and_no_function_over_60() -> None:
    found = [line for path in sources() for line in too_long(path)]
    assert not found, "over the limits:\n" + "\n".join(found)
