"""Embed a whole catalogue in a batch job, for `lookalike import`: JSONL listings in, Parquet rows with vectors out.

    python -m models.embed_catalog --model models/siglip.onnx --items items.jsonl --out vectors.parquet

Each line of --items is what `lookalike index` reads (a POST /items body: image_url, image_base64 or images;
`image` as a path or URL). Worker processes fetch the photos with the service's fetcher (its URL guard: set
LOOKALIKE_FETCH_ALLOW_PRIVATE=true for a catalogue on a private network) and turn them into model pixels with the
service's own decode and preprocessing (app/ingest/decode.py, read from the model file's metadata, DECODE_DRAFT
as the service has it); this process runs ONNX Runtime (CUDA when usable, else the CPU) on `--batch` photos at a
time. A row whose photo cannot be fetched or decoded is reported (row number, reason) and left out.

Output, one row per listing: item_id, title, category, price, seller_id, status, attributes (JSON text) and
image_url / image_base64 with `vector` list<float32>; or, when some listing has several photos, `images`
(list<string>: URLs or base64, in order) with `vector` list<list<float32>> (one per photo, in that order).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydantic
from tqdm import tqdm

from app.cli.index import LineError, item_from_line
from app.core.errors import LookalikeError, validation_message
from app.core.jsonl import jsonl_lines
from app.core.schemas import META_FIELDS, ItemIn
from app.core.settings import Settings, load_settings
from app.encode.encoder import OnnxImageEncoder
from app.ingest.decode import load_pixels
from app.service.embedding import decode_base64
from app.service.runtime import make_fetcher

WINDOW = 256  # rows handed to the workers at once; the next window is prepared while this one is encoded

# ---- worker processes: photo -> model pixels ----------------------------------------------------------------

_worker: dict[str, Any] = {}


def _init_worker(settings: Settings, size: int, resample: str) -> None:
    loop = asyncio.new_event_loop()
    _worker.update(loop=loop, fetcher=make_fetcher(settings), settings=settings, size=size, resample=resample)


def _pixels(photos: list[tuple[str | None, str | None]]) -> np.ndarray | str:
    """A listing's photos (url, base64) -> uint8 [photos, size, size, 3], or the reason one failed."""
    settings: Settings = _worker["settings"]
    out = []
    for i, (url, b64) in enumerate(photos):
        try:
            if url is not None:
                data = _worker["loop"].run_until_complete(_worker["fetcher"].fetch(url))
            else:
                data = decode_base64(b64 or "", settings.fetch_max_bytes)
            out.append(
                load_pixels(
                    data, _worker["size"], settings.image_max_pixels, _worker["resample"], settings.decode_draft
                )
            )
        except LookalikeError as exc:
            where = f"photo {i}: " if len(photos) > 1 else ""
            return f"{where}{exc.code}: {exc.message}"
    return np.stack(out)


# ---- this process: read, encode, write ----------------------------------------------------------------------


def _items(path: Path, report: Any) -> Iterator[tuple[int, ItemIn]]:
    """(line number, checked item) for each line POST /items would take; the others are reported."""
    for number, line in jsonl_lines(path):
        try:
            yield number, ItemIn.model_validate(item_from_line(line, path.parent))
        except LineError as exc:
            report(number, "?", str(exc))
        except pydantic.ValidationError as exc:
            report(number, "?", validation_message(exc.errors()))


def _photo_text(url: str | None, b64: str | None) -> str:
    return url if url is not None else b64 or ""


def _schema(multi: bool) -> pa.Schema:
    fields = [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("category", pa.string()),
        ("price", pa.float64()),
        ("seller_id", pa.string()),
        ("status", pa.string()),
        ("attributes", pa.string()),
    ]
    if multi:
        fields += [("images", pa.list_(pa.string())), ("vector", pa.list_(pa.list_(pa.float32())))]
    else:
        fields += [("image_url", pa.string()), ("image_base64", pa.string()), ("vector", pa.list_(pa.float32()))]
    return pa.schema(fields)


def _table(rows: list[tuple[ItemIn, np.ndarray]], schema: pa.Schema) -> pa.Table:
    columns: dict[str, Any] = {name: [getattr(item, name) for item, _ in rows] for name in ("item_id", *META_FIELDS)}
    columns["attributes"] = [json.dumps(a) if a is not None else None for a in columns["attributes"]]
    photos = [np.asarray(v, dtype=np.float32) for _, v in rows]
    dim = photos[0].shape[1] if photos else 0
    flat = pa.array(np.concatenate([p.reshape(-1) for p in photos]) if photos else np.zeros(0, np.float32))
    per_photo = pa.array(np.arange(0, len(flat) + 1, dim or 1, dtype=np.int32))  # one list per photo vector
    if "images" in schema.names:
        columns["images"] = [[_photo_text(p.url, p.base64) for p in item.photos()] for item, _ in rows]
        inner = pa.ListArray.from_arrays(per_photo, flat)
        counts = np.cumsum([0] + [len(p) for p in photos], dtype=np.int64).astype(np.int32)
        columns["vector"] = pa.ListArray.from_arrays(pa.array(counts), inner)
    else:
        columns["image_url"] = [item.image_url for item, _ in rows]
        columns["image_base64"] = [item.image_base64 for item, _ in rows]
        columns["vector"] = pa.ListArray.from_arrays(
            pa.array(np.arange(0, len(flat) + 1, dim or 1, dtype=np.int32)), flat
        )
    return pa.table({name: columns[name] for name in schema.names}, schema=schema)


def _encode(encoder: OnnxImageEncoder, pixels: list[np.ndarray], batch: int) -> list[np.ndarray]:
    """Each listing's pixels -> its vectors [photos, dim], `batch` photos per ONNX Runtime run."""
    if not pixels:
        return []
    every = np.concatenate(pixels)
    vectors = np.concatenate([encoder.embed(every[i : i + batch]) for i in range(0, len(every), batch)])
    bounds = np.cumsum([0] + [len(p) for p in pixels])
    return [vectors[bounds[i] : bounds[i + 1]] for i in range(len(pixels))]


def embed_catalog(model: Path, items: Path, out: Path, batch: int, workers: int) -> tuple[int, int]:
    """Write `out`; returns (rows written, rows left out)."""
    settings = load_settings()
    total = multi = 0
    for _, line in jsonl_lines(items):  # one quick pass: the row count (progress) and the vector layout
        total += 1
        multi = multi or '"images"' in line
    skipped = 0

    def report(number: int, item_id: str, reason: str) -> None:
        nonlocal skipped
        skipped += 1
        tqdm.write(f"row {number} ({item_id}): {reason}", file=sys.stderr)

    probe = OnnxImageEncoder(model, device="cpu")  # metadata only: the pool starts before the real session
    size, resample = probe.meta.image_size, probe.meta.resample
    del probe
    schema = _schema(bool(multi))
    written = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("forkserver")
    with context.Pool(workers, _init_worker, (settings, size, resample)) as pool:
        encoder = OnnxImageEncoder(model, device="auto")
        bar = tqdm(total=total, unit="row", desc=f"embedding on {encoder.provider}", disable=None)
        with pq.ParquetWriter(out, schema) as writer:
            for seen, done in _windows(pool, _items(items, report), encoder, batch, report):
                if done:
                    writer.write_table(_table(done, schema))
                written += len(done)
                bar.update(seen)
        bar.close()
    return written, skipped


def _windows(
    pool: Pool, items: Iterator[tuple[int, ItemIn]], encoder: OnnxImageEncoder, batch: int, report: Any
) -> Iterator[tuple[int, list[tuple[ItemIn, np.ndarray]]]]:
    """(rows read, encoded rows) per window, in file order: the workers prepare the next window while this one
    is encoded."""

    def submit() -> tuple[list[tuple[int, ItemIn]], Any] | None:
        window = [x for _, x in zip(range(WINDOW), items, strict=False)]
        if not window:
            return None
        photos = [[(p.url, p.base64) for p in item.photos()] for _, item in window]
        return window, pool.map_async(_pixels, photos, chunksize=4)

    pending = submit()
    while pending is not None:
        window, result = pending
        pending = submit()
        ready: list[tuple[ItemIn, np.ndarray]] = []
        for (number, item), pixels in zip(window, result.get(), strict=True):
            if isinstance(pixels, str):
                report(number, item.item_id, pixels)
            else:
                ready.append((item, pixels))
        vectors = _encode(encoder, [p for _, p in ready], batch)
        yield len(window), [(item, v) for (item, _), v in zip(ready, vectors, strict=True)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.embed_catalog", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True, help="the ONNX model file the service serves")
    p.add_argument("--items", type=Path, required=True, help="JSONL listings (the `lookalike index` format)")
    p.add_argument("--out", type=Path, required=True, help="the Parquet file to write")
    p.add_argument("--batch", type=int, default=64, help="photos per ONNX Runtime run (default 64)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="fetch/decode processes")
    args = p.parse_args(argv)
    if args.batch < 1 or args.workers < 1:
        p.error("--batch and --workers must be at least 1")
    started = time.perf_counter()
    written, skipped = embed_catalog(args.model, args.items, args.out, args.batch, args.workers)
    seconds = time.perf_counter() - started
    print(
        f"wrote {written} row(s) to {args.out} in {seconds:.1f} s ({written / max(seconds, 1e-9):.1f} rows/s); "
        f"{skipped} row(s) left out",
        file=sys.stderr,
    )
    return 0 if skipped == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
