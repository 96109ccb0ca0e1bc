"""The staging folder of a bulk load: written row by row by the store, read by the builder's `bulk` command.

A folder holds one shard's worth of points, in load order:
- `layout.json`: the staged vectors, [[vector name, dim], ...]; vector k's rows are in `vectors-<k>.f32`.
- `points.jsonl`: one line per point, {"id": point id, "payload": {...}, "photos": [rows of vector k, ...]}.
- `vectors-<k>.f32`: the raw float32 rows [photos, dim] of every point, appended one point after another.
Nothing is held in memory but one point (writing) or one page (reading), so a load's size is bounded by the
disk only. No fsync: the builder reads the folder right away, and a crash leaves it as `tmp-*` garbage.

Imported by the builder process: numpy, qdrant_edge and app.store.versions only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from qdrant_edge import Point

from app.store.versions import point_vector

LAYOUT = "layout.json"
POINTS = "points.jsonl"
BUFFER_BYTES = 1 << 20


def _vector_file(folder: Path, k: int) -> Path:
    return folder / f"vectors-{k}.f32"


class StagingWriter:
    """Appends points to a new staging folder; `close()` when done (or on failure)."""

    def __init__(self, folder: Path, vectors: dict[str, int]) -> None:
        folder.mkdir()
        self.names = list(vectors)
        self.count = 0
        (folder / LAYOUT).write_text(json.dumps([[n, d] for n, d in vectors.items()]), encoding="utf-8")
        self._points = (folder / POINTS).open("w", encoding="utf-8", buffering=BUFFER_BYTES)
        self._vectors: list[BinaryIO] = [
            _vector_file(folder, k).open("wb", buffering=BUFFER_BYTES) for k in range(len(self.names))
        ]

    def add(self, pid: str, payload_json: str, rows: dict[str, np.ndarray]) -> None:
        """One point: its id, its payload already as JSON, its photo rows [P, dim] per staged vector name."""
        photos = []
        for name, f in zip(self.names, self._vectors, strict=True):
            block = np.ascontiguousarray(rows[name], dtype=np.float32)
            f.write(block.tobytes())
            photos.append(len(block))
        self._points.write(f'{{"id": {json.dumps(pid)}, "payload": {payload_json}, "photos": {json.dumps(photos)}}}\n')
        self.count += 1

    def close(self) -> None:
        for f in (self._points, *self._vectors):
            f.close()


def read_points(folder: Path, wanted: dict[str, int], page: int) -> Iterator[list[Point]]:
    """The staged points in pages of `page`, with the staged vectors that `wanted` names (a version retired
    since the rows were staged is left out; one added since is simply absent from these points)."""
    layout = [(str(n), int(d)) for n, d in json.loads((folder / LAYOUT).read_text(encoding="utf-8"))]
    arrays = [_rows(_vector_file(folder, k), dim) for k, (_name, dim) in enumerate(layout)]
    offsets = [0] * len(layout)
    batch: list[Point] = []
    with (folder / POINTS).open(encoding="utf-8") as lines:
        for line in lines:
            row: dict[str, Any] = json.loads(line)
            vectors = {}
            for k, ((name, _dim), count) in enumerate(zip(layout, row["photos"], strict=True)):
                if name in wanted:
                    vectors[name] = point_vector(name, arrays[k][offsets[k] : offsets[k] + count])
                offsets[k] += count
            batch.append(Point(row["id"], vectors, row["payload"]))
            if len(batch) == page:
                yield batch
                batch = []
    if batch:
        yield batch


def _rows(path: Path, dim: int) -> np.ndarray:
    """The file's float32 rows [n, dim], memory-mapped (pages are read as the points are)."""
    if path.stat().st_size == 0:
        return np.empty((0, dim), dtype=np.float32)
    return np.memmap(path, dtype=np.float32, mode="r").reshape(-1, dim)
