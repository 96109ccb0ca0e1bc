"""`lookalike import FILE --url URL`: the checked rows to a running service's POST /items/import (admin key).

The rows are checked and spot-checked here first, as in-process (the check needs the model file of the version
in LOOKALIKE_MODEL_PATH here too), then sent `--batch` (at most 256) at a time. The service writes them through
its ordinary write path; a re-run sends every row again (upserts by item_id: the same store in the end). The
fastest path for a large first load is in-process, with the service stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import httpx
from tqdm import tqdm

from app.cli.client import CommandError, answer_json, error_line, http_client
from app.cli.import_check import Rejects, Scan, parity, scan, valid_rows, version_encoder
from app.core.schemas import BATCH_MAX
from app.core.settings import load_settings
from app.service.import_rows import ImportRow
from app.service.parity import Sample
from app.service.runtime import load_models


def _body(row: ImportRow) -> dict[str, Any]:
    """The row as POST /items/import takes it: the checked item and its normalised vectors."""
    body = row.item.model_dump(exclude_none=True)
    body["vector"] = row.vectors.tolist()
    return body


async def _send(client: httpx.AsyncClient, version: str, chunk: list[ImportRow], rejects: Rejects) -> int:
    """One POST /items/import; the items it refuses are rejects. Returns the items written."""
    response = await client.post("/items/import", json={"model_version": version, "items": [_body(r) for r in chunk]})
    if response.status_code != 200:  # the key, the URL, the version: every following batch would get it too
        raise CommandError(error_line(response))
    written = 0
    for row, result in zip(chunk, answer_json(response)["results"], strict=True):
        error = result.get("error") or {}
        if result["status"] < 300:
            written += 1
        else:
            rejects.add(row.number, {"item_id": row.item.item_id}, f"{error.get('code')}: {error.get('message')}")
    return written


async def send_rows(args: argparse.Namespace, rejects: Rejects) -> int:
    settings = load_settings()
    models = await asyncio.to_thread(load_models, settings)
    encoder = version_encoder(models, args.model_version, "the spot-check embeds with it here (or pass --no-check)")
    started = time.perf_counter()
    first = Scan("", 0, Sample(args.check, 0))
    scanned = await asyncio.to_thread(scan, args.file, encoder.dim, settings, first, rejects)
    if scanned.valid == 0:
        print(f"nothing to import ({rejects.count} row(s) rejected)", file=sys.stderr)
        return 3 if rejects.count else 0
    await parity(args, scanned, encoder, settings)
    size = min(args.batch or BATCH_MAX, BATCH_MAX)
    sent = 0
    bar = tqdm(total=scanned.valid, unit="item", desc=f"importing {args.file.name}", disable=None)
    async with http_client(args.url, args.api_key) as client:
        chunk: list[ImportRow] = []
        for row in valid_rows(args.file, encoder.dim, settings, scanned):
            chunk.append(row)
            if len(chunk) == size:
                sent += await _send(client, args.model_version, chunk, rejects)
                bar.update(len(chunk))
                chunk = []
        if chunk:
            sent += await _send(client, args.model_version, chunk, rejects)
    bar.close()
    seconds = time.perf_counter() - started
    print(f"imported {sent} item(s) in {seconds:.1f} s, {rejects.count} row(s) rejected", file=sys.stderr)
    return 3 if rejects.count else 0
