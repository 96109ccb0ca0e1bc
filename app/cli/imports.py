"""`lookalike import FILE --model-version V`: a catalogue's vectors, made by a batch job, into the store.

FILE is Parquet (what `python -m models.embed_catalog` writes) or JSONL with a `vector` field. Each row is a
POST /items body plus its vectors (app/service/import_rows.py); a bad row is reported with its number and
skipped. Before anything is written, a seeded sample is re-embedded with the service's own model file for V
and compared (app/service/parity.py): vectors of another model or another preprocessing refuse the import
(exit 2).

In-process (no --url): the embedded store is opened like the service opens it (the service must be stopped:
the store's directory lock refuses a second opener) and filled with `EdgeStore.bulk_load`, one sealed shard
per `--batch` rows (default LOOKALIKE_EDGE_BULK_SHARD_POINTS), each vector indexed once: the rows stream
through, never all in memory. After each shard is in, the rows done are noted in a progress
file beside the store, keyed by the file's sha256: a re-run (after a crash, a kill -9, or of a finished file)
goes on after the last committed row; rows redone are upserts by item_id. With --url the rows go to the
running service's POST /items/import (admin key), a batch at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from app.cli.client import CommandError
from app.cli.import_check import ImportRefused, Rejects, Scan, parity, scan, valid_rows, version_encoder
from app.cli.import_remote import send_rows
from app.cli.import_source import SourceError, file_sha256
from app.cli.options import add_remote, int_range
from app.core.errors import StoreUnavailable
from app.core.schemas import MODEL_VERSION_PATTERN
from app.core.settings import Settings, load_settings
from app.encode.encoder import OnnxImageEncoder
from app.service.parity import Sample
from app.service.runtime import load_models, make_store
from app.service.writes import listing_payload
from app.store.images import ImageStore
from app.store.qdrant_edge.files import read_json, write_json_atomic

DEFAULT_CHECK = 50
SEED = 0


class Progress:
    """The rows of a file (by sha256) committed to a store; written atomically after each shard is in."""

    def __init__(self, folder: Path, sha256: str) -> None:
        self.path = folder / f"{sha256}.json"
        self.sha256 = sha256

    def rows(self) -> int:
        return int(read_json(self.path).get("rows_committed", 0))

    def commit(self, rows: int, file: Path) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, {"file": str(file), "sha256": self.sha256, "rows_committed": rows})


def _store_folder_error(exc: StoreUnavailable, settings: Settings) -> CommandError:
    return CommandError(
        f"{exc.message}: is the service running on LOOKALIKE_QDRANT_PATH={settings.qdrant_path}? An in-process "
        "import needs the store to itself: stop the service first, or import through it with --url"
    )


def _version_of(versions: list[Any], version: str) -> str:
    """The serving version; CommandError unless `version` is the only active one (a load brings one version)."""
    active = [v.model_version for v in versions if v.state != "retired"]
    if active != [version]:
        raise CommandError(
            f"the store's active model versions are {active}; an import brings vectors of {version!r} only and "
            "each item needs every active version's: import into a store whose one active version it is"
        )
    return next(v.model_version for v in versions if v.state == "serving")


def bulk_load(store: Any, settings: Settings, scanned: Scan, args: argparse.Namespace, dim: int) -> int:
    """Pass two: the valid rows streamed into one store.bulk_load (a sealed shard per --batch rows, default
    LOOKALIKE_EDGE_BULK_SHARD_POINTS), the progress note after each shard is in."""
    path = args.file
    serving = _version_of(store.versions(), args.model_version)
    images = ImageStore(settings.image_store_dir())
    progress = Progress(_progress_folder(store), scanned.sha256)
    bar = tqdm(total=scanned.valid, unit="item", desc=f"importing {path.name}", disable=None)
    numbers = array("q")  # the file row number of each row handed to the load, for the progress note

    def rows() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        for row in valid_rows(path, dim, settings, scanned):
            listing = row.listing(settings.fetch_max_bytes)
            payload = listing_payload(listing, serving, time.time())  # the service's own payload
            for photo, data in zip(payload["photos"], listing.photos, strict=True):
                if isinstance(data, bytes):  # durable before the store names them, as in a write
                    images.put(photo["image_key"], data)
            numbers.append(row.number)
            yield payload, {args.model_version: row.vectors}

    def committed(done: int) -> None:
        progress.commit(numbers[done - 1], path)
        tqdm.write(f"committed rows 1..{numbers[done - 1]} ({done} item(s) in this run)", file=sys.stderr)

    try:
        report = store.bulk_load(
            rows(), shard_points=args.batch, progress=lambda n: bar.update(n - bar.n), committed=committed
        )
        if scanned.last > (numbers[-1] if numbers else scanned.done):  # rejected rows after the last one loaded
            progress.commit(scanned.last, path)
    finally:
        bar.close()
    return report.items


def _progress_folder(store: Any) -> Path:
    root = Path(store.root)
    return root.with_name(root.name + ".imports")


async def in_process(args: argparse.Namespace, rejects: Rejects) -> int:
    settings = load_settings()
    models = await asyncio.to_thread(load_models, settings)
    encoder = version_encoder(
        models, args.model_version, "the import stores the vectors under that version and checks them with it"
    )
    if settings.qdrant_url:
        raise CommandError("an in-process import fills the embedded store; with LOOKALIKE_QDRANT_URL use --url")
    store = make_store(settings)
    try:
        try:
            versions = store.open(models.dims())
        except StoreUnavailable as exc:
            raise _store_folder_error(exc, settings) from None
        _version_of(versions, args.model_version)
        return await _import_into(args, store, settings, encoder, rejects)
    finally:
        store.close()


async def _import_into(
    args: argparse.Namespace, store: Any, settings: Settings, encoder: OnnxImageEncoder, rejects: Rejects
) -> int:
    started = time.perf_counter()
    sha = await asyncio.to_thread(file_sha256, args.file)
    done = Progress(_progress_folder(store), sha).rows()
    first = Scan(sha, done, Sample(args.check, SEED))
    scanned = await asyncio.to_thread(scan, args.file, encoder.dim, settings, first, rejects)
    if done:
        print(f"rows 1..{done} of {args.file} were imported by an earlier run: going on after them", file=sys.stderr)
    if scanned.valid == 0:
        print(f"nothing new to import ({rejects.count} row(s) rejected)", file=sys.stderr)
        return 3 if rejects.count else 0
    await parity(args, scanned, encoder, settings)
    loaded = await asyncio.to_thread(bulk_load, store, settings, scanned, args, encoder.dim)
    seconds = time.perf_counter() - started
    print(
        f"imported {loaded} item(s) in {seconds:.1f} s ({loaded / max(seconds, 1e-9):.0f} items/s), "
        f"{rejects.count} row(s) rejected; the store holds {store.count()} item(s)",
        file=sys.stderr,
    )
    return 3 if rejects.count else 0


async def run(args: argparse.Namespace) -> int:
    rejects_file = args.rejects.open("w", encoding="utf-8") if args.rejects else None
    rejects = Rejects(rejects_file)
    try:
        if args.url:
            return await send_rows(args, rejects)
        return await in_process(args, rejects)
    except ImportRefused as exc:
        print(f"lookalike import: {exc}", file=sys.stderr)
        return 2
    except SourceError as exc:
        print(f"lookalike import: {exc}", file=sys.stderr)
        return 2
    finally:
        if rejects_file is not None:
            rejects_file.close()


def _file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return path


def _version(text: str) -> str:
    if not re.fullmatch(MODEL_VERSION_PATTERN, text):
        raise argparse.ArgumentTypeError(f"not a model version: {text!r}")
    return text


def add_parser(sub: Any) -> None:
    p = sub.add_parser("import", help="import a catalogue's vectors (Parquet or JSONL) made by a batch job")
    p.add_argument("file", type=_file, help="Parquet (models.embed_catalog) or JSONL with a `vector` field")
    p.add_argument("--model-version", type=_version, required=True, help="the model version the vectors are of")
    add_remote(p, what="instead of in-process (POST /items/import; the admin key)")
    check = p.add_mutually_exclusive_group()
    check.add_argument("--check", type=int_range(1, 10_000), default=DEFAULT_CHECK, help="rows to re-embed first")
    check.add_argument("--no-check", action="store_true", help="skip the parity spot-check (loudly)")
    p.add_argument(
        "--batch",
        type=int_range(1, 100_000_000),
        default=None,
        help="rows per sealed shard (default LOOKALIKE_EDGE_BULK_SHARD_POINTS); with --url rows per request (256)",
    )
    p.add_argument("--rejects", type=Path, help="write the rejected rows (row, item_id, reason) to this JSONL file")
    p.set_defaults(run=run)
