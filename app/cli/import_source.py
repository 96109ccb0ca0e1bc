"""The rows of an import file, streamed: Parquet (what `python -m models.embed_catalog` writes) or JSONL.

Each row comes as (number, dict of its columns), number 1 for the first row. Parquet is read a record batch at
a time, its `vector` column sliced out of the batch's flat float buffer (a row's list<float32>, or
list<list<float32>> for several photos, becomes a numpy array without going through Python floats).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from app.core.jsonl import jsonl_lines

READ_BATCH = 4096  # Parquet rows per record batch: bounds the memory a read holds


class SourceError(ValueError):
    """The file cannot be read as an import file; the message says why."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def is_parquet(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"PAR1"


def read_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(row number, row) for every row of the file; a JSONL line that is not JSON comes as its error text."""
    if is_parquet(path):
        yield from _parquet_rows(path)
        return
    for number, line in jsonl_lines(path):
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, f"not JSON: {exc}"


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        reader = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{path} is not a readable Parquet file: {exc}") from None
    number = 0
    for batch in reader.iter_batches(batch_size=READ_BATCH):
        names = batch.schema.names
        columns = {n: batch.column(n).to_pylist() for n in names if n != "vector"}
        vectors = _vector_column(batch.column("vector")) if "vector" in names else [None] * batch.num_rows
        for i in range(batch.num_rows):
            number += 1
            row = {n: values[i] for n, values in columns.items()}
            row["vector"] = vectors[i]
            yield number, row


def _vector_column(column: pa.Array) -> list[np.ndarray | None]:
    """list<float> -> one [dim] array per row; list<list<float>> -> one [photos, dim] array (a ragged row stays
    a list of arrays, which the row check refuses); nulls -> None."""
    if not pa.types.is_list(column.type) and not pa.types.is_large_list(column.type):
        return [None if v is None else np.asarray(v) for v in column.to_pylist()]
    null = column.is_null().to_numpy(zero_copy_only=False)
    offsets = column.offsets.to_numpy()
    offsets = offsets - offsets[0]  # a batch's column may be a slice of a larger one
    if pa.types.is_list(column.type.value_type) or pa.types.is_large_list(column.type.value_type):
        inner = _vector_column(column.flatten())
        rows: list[Any] = []
        for i in range(len(column)):
            part = inner[offsets[i] : offsets[i + 1]]
            regular = part and all(p is not None for p in part) and len({len(p) for p in part}) == 1  # type: ignore[arg-type]
            rows.append(None if null[i] else np.stack(part) if regular else part)  # type: ignore[arg-type]
        return rows
    values = column.flatten().to_numpy(zero_copy_only=False)
    return [None if null[i] else values[offsets[i] : offsets[i + 1]] for i in range(len(column))]
