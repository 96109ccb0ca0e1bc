"""The bulk import of a catalogue's precomputed vectors (`lookalike import`): in-process, over HTTP, and the
cost of its parity spot-check.

    python -m bench.import_rate --items N [--dim 768] [--http-items M] [--check N] [--json]

1. N clustered unit vectors with cluster-correlated payloads (bench/scale_data.py, seeded by --seed) are
   written, CHUNK rows at a time, as the Parquet file `lookalike import` reads (item_id, title, category,
   price, seller_id, status, image_url, vector list<float32>); the first M rows also go to a second file.
   The image URLs are never fetched: these parts run with --no-check.
2. In-process: `lookalike import FILE --model-version V --no-check` into a fresh embedded store (the model
   file the service would load: base for 768, tiny for 32). `import_seconds` is the command's wall time: when
   it exits, every shard is built and swapped in. The store's shards and points come from its manifest.json
   afterwards (read, not opened): in a fresh store each sealed shard was built once, by this load.
3. Over HTTP: `python -m app` on another fresh store (an admin key set), then `lookalike import` of the M-row
   file with --url. The service exposes no index maintenance state (neither GET /info nor /metrics), so it is
   then stopped and its store opened here to wait for the maintenance it left (freezes, builds, merges):
   `http_indexed_seconds` = the command + the stop + that wait. The ratio compares items/s to fully indexed,
   each side on its own item count.
4. The spot-check: a generated catalogue of --catalog-items listings (models.catalog) with its photos served on
   127.0.0.1, embedded by `python -m models.embed_catalog` with the same model file (the batch job's images/s
   on this machine), then `lookalike import --check N` into a fresh store: the seconds the check took (the
   command prints them) and the command's total.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from app.core.model_contract import read_model_file
from bench import scale_data
from bench.common import cache_dir, cached_model, emit, log, machine_info, machine_line, table
from bench.live import ROOT, run_process, running_service, stop_process
from bench.read_path import CONFIG_BY_DIM

COLLECTION = "items"
ADMIN_KEY = "bench-admin-key"
CATALOG_ITEMS = 100
FIELDS = ("item_id", "title", "category", "price", "seller_id", "status")
SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("category", pa.string()),
        ("price", pa.float64()),
        ("seller_id", pa.string()),
        ("status", pa.string()),
        ("image_url", pa.string()),
        ("vector", pa.list_(pa.float32())),
    ]
)
IMPORTED = re.compile(r"imported (\d+) item\(s\) in ([\d.]+) s")
CHECKED = re.compile(r"spot-check: (\d+) row\(s\) re-embedded with \S+ in ([\d.]+) s")
EMBEDDED = re.compile(r"wrote (\d+) row\(s\) to .* in ([\d.]+) s \(([\d.]+) rows/s\)")


# ---------------------------------------------------------------- the files


def _table(vectors: np.ndarray, fields: scale_data.Fields, model_version: str, start: int) -> pa.Table:
    """Rows start.. of the catalogue as an import file's rows (the payload fields bench/scale_data.py makes)."""
    payloads = [scale_data.payload(start + j, fields, model_version) for j in range(len(vectors))]
    columns: dict[str, Any] = {name: [p[name] for p in payloads] for name in FIELDS}
    columns["image_url"] = [f"https://img.example.com/{p['item_id']}.jpg" for p in payloads]
    dim = vectors.shape[1]
    offsets = pa.array(np.arange(0, len(vectors) * dim + 1, dim, dtype=np.int32))
    columns["vector"] = pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1)))
    return pa.table(columns, schema=SCHEMA)


def write_files(work: Path, n: int, dim: int, seed: int, model_version: str, head: int) -> dict[str, Any]:
    """The catalogue as work/all.parquet (n rows) and work/head.parquet (its first `head` rows), a chunk of
    scale_data.CHUNK rows in memory at a time."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    scale_data.generate(n, dim, seed, work / "vectors.npy", work / "fields.npz")
    vectors, fields = np.load(work / "vectors.npy", mmap_mode="r"), scale_data.Fields.load(work / "fields.npz")
    with (
        pq.ParquetWriter(work / "all.parquet", SCHEMA) as every,
        pq.ParquetWriter(work / "head.parquet", SCHEMA) as first,
        tqdm(total=n, desc="write parquet", unit="row", file=sys.stderr) as bar,
    ):
        for start in range(0, n, scale_data.CHUNK):
            chunk = _table(np.array(vectors[start : start + scale_data.CHUNK]), fields, model_version, start)
            every.write_table(chunk)
            if start < head:
                first.write_table(chunk.slice(0, head - start))
            bar.update(chunk.num_rows)
    del vectors
    (work / "vectors.npy").unlink()  # the Parquet files hold it now
    return {
        "seconds": round(time.perf_counter() - t0, 1),
        "file_mb": round((work / "all.parquet").stat().st_size / 2**20, 1),
    }


# ---------------------------------------------------------------- commands and stores


def store_env(model: Path, qdrant: Path, **extra: str) -> dict[str, str]:
    """What `python -m app` and `lookalike` read to use this store and model (no other LOOKALIKE_* setting)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env.update(
        LOOKALIKE_QDRANT_PATH=str(qdrant.resolve()),
        LOOKALIKE_MODEL_PATH=str(model.resolve()),
        LOOKALIKE_COLLECTION=COLLECTION,
        LOOKALIKE_DEVICE="cpu",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def command(args: list[str], env: dict[str, str], timeout: float) -> tuple[str, float]:
    """Run a command to its end: (its stderr, wall seconds); RuntimeError with its output unless exit 0."""
    t0 = time.perf_counter()
    done = run_process(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} ... exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stderr, seconds


def lookalike_import(file: Path, version: str, env: dict[str, str], *extra: str, timeout: float) -> tuple[str, float]:
    args = [sys.executable, "-m", "app.cli", "import", str(file), "--model-version", version, *extra]
    return command(args, env, timeout)


def found(pattern: re.Pattern[str], text: str) -> re.Match[str]:
    match = pattern.search(text)
    if match is None:
        raise RuntimeError(f"no line matching {pattern.pattern!r} in:\n{text[-3000:]}")
    return match


def manifest_stats(qdrant: Path) -> dict[str, Any]:
    """The collection's shards as its manifest.json lists them. In a fresh store filled by one bulk load each
    sealed shard was built once by it, so the sealed shards' points are the points that load built."""
    shards = json.loads((qdrant / COLLECTION / "manifest.json").read_text(encoding="utf-8"))["shards"]
    roles: dict[str, int] = {}
    for s in shards:
        roles[s["role"]] = roles.get(s["role"], 0) + 1
    return {
        "shards": len(shards),
        "shard_roles": roles,
        "points": sum(int(s["points"]) for s in shards),
        "points_built": sum(int(s["points"]) for s in shards if s["role"] == "sealed"),
    }


def wait_for_indexing(model: Path, qdrant: Path) -> dict[str, Any]:
    """Open the store as the service does (its default settings) and wait for the maintenance it left."""
    from app.core.settings import Settings
    from app.service.runtime import make_store

    settings = Settings(
        qdrant_path=qdrant, collection=COLLECTION, model_path=[model], device="cpu", edge_read_workers=0
    )
    meta = read_model_file(model)
    t0 = time.perf_counter()
    store = make_store(settings)
    try:
        store.open({meta.model_version: meta.embedding_dim})
        if not store.wait_for_maintenance(timeout_s=3600):
            raise TimeoutError("index maintenance did not finish within an hour")
        seconds = time.perf_counter() - t0
        stats = store.stats()
    finally:
        store.close()
    shards = stats["shards"]
    return {
        "seconds": seconds,
        "points_built_after_restart": stats["points_built"],  # the builds this wait ran
        "points": sum(s["points"] for s in shards),
        "indexed_vectors": sum(s["indexed_vectors"] for s in shards),
        "shards": len(shards),
    }


def rate(items: int, seconds: float) -> float:
    return round(items / seconds, 1) if seconds > 0 else 0.0


# ---------------------------------------------------------------- the three parts


def in_process(work: Path, model: Path, version: str, items: int) -> dict[str, Any]:
    qdrant = work / "in-process" / "qdrant"
    log(f"in-process: lookalike import of {items} rows into a fresh embedded store ...")
    env = store_env(model, qdrant)
    stderr, seconds = lookalike_import(work / "all.parquet", version, env, "--no-check", timeout=600 + items / 50)
    imported, own_s = found(IMPORTED, stderr).groups()
    stats = manifest_stats(qdrant)
    return {
        "items": int(imported),
        "import_seconds": round(seconds, 2),
        "items_per_s": rate(int(imported), seconds),
        "command_reported_seconds": float(own_s),  # what it printed: without its start (imports, model load)
        **stats,
    }


def over_http(work: Path, model: Path, version: str, items: int) -> dict[str, Any]:
    qdrant = work / "http" / "qdrant"
    env = store_env(model, qdrant, LOOKALIKE_ADMIN_API_KEY=ADMIN_KEY)
    service_env = {k: v for k, v in env.items() if k.startswith("LOOKALIKE_")}
    log("over HTTP: starting the service on a fresh store ...")
    with running_service(service_env, name="import-rate") as service:
        log(f"over HTTP: lookalike import --url of {items} rows ...")
        stderr, seconds = lookalike_import(
            work / "head.parquet",
            version,
            env,
            "--no-check",
            "--url",
            service.url,
            "--api-key",
            ADMIN_KEY,
            timeout=600 + items / 10,
        )
        imported = int(found(IMPORTED, stderr).group(1))
        log("over HTTP: stopping the service, then waiting for the index maintenance it left ...")
        t0 = time.perf_counter()
        stop_process(service.process, grace_s=60)
        stop_s = time.perf_counter() - t0
    indexed = wait_for_indexing(model, qdrant)
    total = seconds + stop_s + indexed["seconds"]
    return {
        "items": imported,
        "import_seconds": round(seconds, 2),
        "items_per_s": rate(imported, seconds),
        "stop_seconds": round(stop_s, 2),
        "maintenance_seconds": round(indexed["seconds"], 2),
        "indexed_seconds": round(total, 2),
        "indexed_items_per_s": rate(imported, total),
        "points_built_after_restart": indexed["points_built_after_restart"],
        "points": indexed["points"],
        "indexed_vectors": indexed["indexed_vectors"],
        "shards": indexed["shards"],
    }


@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """The folder's files over HTTP on 127.0.0.1; yields the base URL."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def spot_check(work: Path, model: Path, version: str, check: int, catalog_items: int) -> dict[str, Any]:
    folder = work / "catalog"
    log(f"spot-check: a generated catalogue of {catalog_items} listings, embedded, then imported with --check ...")
    command([sys.executable, "-m", "models.catalog", "--out", str(folder), "--items", str(catalog_items),
             "--no-progress"], store_env(model, work / "unused"), timeout=600)  # fmt: skip
    env = store_env(model, work / "checked" / "qdrant", LOOKALIKE_FETCH_ALLOW_PRIVATE="true")
    with serve_folder(folder) as base:
        lines = []
        for line in (folder / "items.jsonl").read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            item["image_url"] = f"{base}/{item.pop('image')}"  # fetched like a marketplace's photos
            lines.append(json.dumps(item) + "\n")
        items = folder / "items-http.jsonl"
        items.write_text("".join(lines), encoding="utf-8")
        out = work / "catalog.parquet"
        embed = [sys.executable, "-m", "models.embed_catalog", "--model", str(model), "--items", str(items)]
        stderr, embed_wall = command([*embed, "--out", str(out)], env, timeout=1800)
        written, embed_s, rows_per_s = found(EMBEDDED, stderr).groups()
        stderr, total = lookalike_import(out, version, env, "--check", str(check), timeout=1800)
    checked, check_s = found(CHECKED, stderr).groups()
    return {
        "catalog_items": catalog_items,
        "embedded": int(written),
        "embed_seconds": float(embed_s),
        "embed_images_per_s": float(rows_per_s),  # one photo per listing
        "embed_wall_seconds": round(embed_wall, 2),
        "check": check,
        "rows_checked": int(checked),
        "check_seconds": float(check_s),
        "import_seconds": round(total, 2),
        "items": int(found(IMPORTED, stderr).group(1)),
    }


# ---------------------------------------------------------------- the run


def run(
    items: int, dim: int, http_items: int, check: int, *, seed: int = 0, catalog_items: int = CATALOG_ITEMS
) -> dict:
    if dim not in CONFIG_BY_DIM:
        raise SystemExit(f"--dim must be one of {sorted(CONFIG_BY_DIM)} (the embedding size of a SigLIP config)")
    machine = machine_info()
    model = cached_model(CONFIG_BY_DIM[dim])
    version = read_model_file(model).model_version
    work = cache_dir("import_rate", f"n{items}-d{dim}-s{seed}")
    shutil.rmtree(work)
    work.mkdir()
    try:
        files = write_files(work, items, dim, seed, version, http_items)
        local = in_process(work, model, version, items)
        remote = over_http(work, model, version, http_items)
        checked = spot_check(work, model, version, check, catalog_items)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    machine["loadavg_1m_end"] = round(os.getloadavg()[0], 2)  # other work on a shared machine slows the parts
    return {
        "benchmark": "import_rate",
        "items": items,
        "dim": dim,
        "http_items": http_items,
        "seed": seed,
        "model_version": version,
        "machine": machine,
        "generate_seconds": files["seconds"],
        "file_mb": files["file_mb"],
        "import_seconds": local["import_seconds"],
        "items_per_s": local["items_per_s"],
        "points_built": local["points_built"],
        "shards": local["shards"],
        "in_process": local,
        "http": remote,
        # items/s to fully indexed, each side on its own count
        "in_process_over_http": round(local["items_per_s"] / remote["indexed_items_per_s"], 1)
        if remote["indexed_items_per_s"]
        else 0.0,
        "spot_check": checked,
    }


def render(r: dict[str, Any]) -> str:
    local, remote, checked = r["in_process"], r["http"], r["spot_check"]
    rows = [
        {
            "path": "in-process (bulk load)",
            "items": local["items"],
            "command_s": local["import_seconds"],
            "items_per_s": local["items_per_s"],
            "indexed_s": local["import_seconds"],
            "indexed_items_per_s": local["items_per_s"],
            "shards": local["shards"],
        },
        {
            "path": "HTTP (POST /items/import)",
            "items": remote["items"],
            "command_s": remote["import_seconds"],
            "items_per_s": remote["items_per_s"],
            "indexed_s": remote["indexed_seconds"],
            "indexed_items_per_s": remote["indexed_items_per_s"],
            "shards": remote["shards"],
        },
    ]
    return "\n".join(
        [
            f"import_rate: {r['items']} x {r['dim']} vectors ({r['model_version']}), Parquet {r['file_mb']} MB",
            machine_line(r["machine"]) + f" at the start, {r['machine']['loadavg_1m_end']} at the end",
            table(rows),
            f"in-process: points_built {local['points_built']}, shard roles {local['shard_roles']}; "
            f"HTTP: stop {remote['stop_seconds']} s + maintenance left {remote['maintenance_seconds']} s "
            f"(points built then {remote['points_built_after_restart']}), "
            f"indexed vectors {remote['indexed_vectors']} of {remote['points']}",
            f"in-process over HTTP (items/s to fully indexed): {r['in_process_over_http']}x",
            f"spot-check: {checked['rows_checked']} row(s) re-embedded in {checked['check_seconds']} s; the import "
            f"of {checked['items']} with --check {checked['check']} took {checked['import_seconds']} s; "
            f"models.embed_catalog: {checked['embed_images_per_s']} images/s ({checked['embedded']} in "
            f"{checked['embed_seconds']} s)",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    from bench.common import base_parser

    parser = base_parser(__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000, help="items imported in-process (default 100000)")
    parser.add_argument("--dim", type=int, default=768, help="32 (tiny model) or 768 (base; default)")
    parser.add_argument("--http-items", type=int, default=None, help="items imported over HTTP (min(N, 20000))")
    parser.add_argument("--check", type=int, default=50, help="rows the spot-check re-embeds (default 50)")
    parser.add_argument("--catalog-items", type=int, default=CATALOG_ITEMS, help="listings of the spot-check part")
    parser.add_argument("--seed", type=int, default=0, help="the catalogue's seed (default 0)")
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.dim, args.http_items, args.check = 2000, 32, 500, 10
    http_items = min(args.items, 20_000) if args.http_items is None else args.http_items
    if args.items < 1 or not 1 <= http_items <= args.items:
        parser.error("--items must be positive and --http-items between 1 and --items")
    if not 1 <= args.check <= args.catalog_items:
        parser.error("--check must be between 1 and --catalog-items")
    result = run(args.items, args.dim, http_items, args.check, seed=args.seed, catalog_items=args.catalog_items)
    emit(result, args.json, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
