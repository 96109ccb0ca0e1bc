"""The one JSONL reader: `lookalike index` (line by line, a bad line reported) and the training side (whole files)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def jsonl_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of every non-blank line, read as UTF-8."""
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                yield number, line


def read_jsonl(path: Path) -> list[Any]:
    """Every non-blank line parsed as JSON (a bad line raises json.JSONDecodeError)."""
    return [json.loads(line) for _, line in jsonl_lines(path)]
