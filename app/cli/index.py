"""`lookalike index FILE`: bulk-index a JSONL file, in-process or over HTTP (POST /items/batch).

Each JSONL line is an object with `item_id`, an image (`image`: local path or http(s) URL, or
`image_url` / `image_base64`) or a listing's photos (`images`: a list, in order, of local paths or
http(s) URLs, or `{"url"}` / `{"base64"}` objects as POST /items takes them) and optional metadata
(title, category, price, seller_id, status, attributes). Relative paths are read from the JSONL file's
folder. A bad line is reported and skipped, never fatal. Without --url the items go through the service
code in-process (the embedded store must not be open in a running server at the same time); with --url
they go over HTTP to POST /items/batch.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

from app.cli.client import CommandError, answer_json, error_line, http_client
from app.cli.options import add_remote, int_range
from app.core.jsonl import jsonl_lines
from app.core.schemas import BATCH_MAX
from app.core.settings import load_settings

# A sender answers one POST /items/batch result per item: {"item_id", "status", "error": {"code", "message"} | None}
Sender = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]

# Answers to a whole batch that every following batch would get too: stop instead of failing each line.
_FATAL = (401, 403, 404, 405)


class LineError(ValueError):
    pass


def item_from_line(line: str, base_dir: Path) -> dict[str, Any]:
    """One JSONL line -> a POST /items body (local image files inlined as base64)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LineError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise LineError("a line must be a JSON object")
    if isinstance(obj.get("images"), list):
        obj["images"] = [photo_of(entry, base_dir) for entry in obj["images"]]
    image = obj.pop("image", None)
    if image is None:
        return obj
    if not isinstance(image, str):
        raise LineError("`image` must be a path or an http(s) URL")
    photo = photo_of(image, base_dir)
    obj["image_url" if "url" in photo else "image_base64"] = photo.get("url", photo.get("base64"))
    return obj


def photo_of(entry: Any, base_dir: Path) -> dict[str, Any]:
    """One photo of a line -> {"url"} or {"base64"} (a local file inlined); objects pass as they are."""
    if isinstance(entry, dict):
        return entry
    if not isinstance(entry, str):
        raise LineError("a photo must be a path, an http(s) URL, or an object with url or base64")
    if entry.startswith(("http://", "https://")):
        return {"url": entry}
    path = Path(entry) if Path(entry).is_absolute() else base_dir / entry
    try:
        return {"base64": base64.b64encode(path.read_bytes()).decode("ascii")}
    except OSError as exc:
        raise LineError(f"cannot read image {path}: {exc.strerror}") from None


@asynccontextmanager
async def in_process_sender() -> AsyncIterator[Sender]:
    from app.service.runtime import running_service

    async with running_service(load_settings()) as service:

        async def send(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r.model_dump() for r in await service.index_items(items)]

        yield send


@asynccontextmanager
async def http_sender(url: str, api_key: str | None) -> AsyncIterator[Sender]:
    async with http_client(url, api_key) as client:

        async def send(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            response = await client.post("/items/batch", json={"items": items})
            if response.status_code in _FATAL:
                raise CommandError(error_line(response))
            body = answer_json(response)
            if response.status_code != 200:
                error = body.get("error", {}) if isinstance(body, dict) else {}
                return [{"item_id": i.get("item_id"), "status": response.status_code, "error": error} for i in items]
            return body["results"]

        yield send


async def index_file(path: Path, send: Sender, batch_size: int) -> tuple[int, int]:
    ok = failed = 0
    total = sum(1 for _ in jsonl_lines(path))
    progress = tqdm(total=total, unit="item", desc=f"indexing {path.name}", disable=None)  # a bar on a terminal only

    def report(number: int, item_id: Any, message: str) -> None:
        nonlocal failed
        failed += 1
        tqdm.write(f"line {number} ({item_id}): {message}", file=sys.stderr)

    async def flush(chunk: list[tuple[int, dict[str, Any]]]) -> None:
        nonlocal ok
        results = await send([item for _, item in chunk])
        for (number, item), result in zip(chunk, results, strict=True):
            if result["status"] < 300:
                ok += 1
            else:
                error = result.get("error") or {}
                report(number, item.get("item_id"), f"{result['status']} {error.get('code')}: {error.get('message')}")
        progress.update(len(chunk))
        progress.set_postfix(ok=ok, failed=failed)

    chunk: list[tuple[int, dict[str, Any]]] = []
    try:
        for number, line in jsonl_lines(path):
            try:
                chunk.append((number, item_from_line(line, path.parent)))
            except LineError as exc:
                report(number, "?", str(exc))
                progress.update(1)
                continue
            if len(chunk) == batch_size:
                await flush(chunk)
                chunk = []
        if chunk:
            await flush(chunk)
    finally:
        progress.close()
    return ok, failed


async def run(args: argparse.Namespace) -> int:
    sender = http_sender(args.url, args.api_key) if args.url else in_process_sender()
    async with sender as send:
        ok, failed = await index_file(args.file, send, args.batch_size)
    print(f"indexed {ok} item(s), {failed} failed", file=sys.stderr)
    return 0 if failed == 0 else 3


def _jsonl_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return path


def add_parser(sub: Any) -> None:
    idx = sub.add_parser("index", help="index items from a JSONL file")
    idx.add_argument("file", type=_jsonl_file)
    add_remote(idx, what="instead of in-process (POST /items/batch)")
    idx.add_argument("--batch-size", type=int_range(1, BATCH_MAX), default=64, metavar=f"1..{BATCH_MAX}")
    idx.set_defaults(run=run)
