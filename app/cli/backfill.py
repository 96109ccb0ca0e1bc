"""`lookalike models backfill VERSION`: embed with VERSION every item that lacks its vector.

In-process, or started in a running service (--url) and followed until it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from typing import Any

from tqdm import tqdm

from app.cli.client import expect, http_client
from app.cli.options import add_remote, positive_float
from app.core.errors import LookalikeError
from app.core.settings import load_settings


async def run(args: argparse.Namespace) -> int:
    """Exit 0: done with no failed item; 3: done, some images could not be fetched/decoded; 1: the run failed."""
    status = await (_over_http(args) if args.url else _in_process(args))
    print(
        f"backfill of {status['version']} (partition {status['partition']}) {status['state']}: "
        f"{status['embedded']} embedded, {status['skipped']} skipped, {status['failed']} failed, "
        f"coverage {status['coverage']:.4f}",
        file=sys.stderr,
    )
    if status["failed_ids"]:
        print("failed items: " + " ".join(status["failed_ids"]), file=sys.stderr)
    if status["state"] != "done":
        if status.get("error"):
            print(f"lookalike: {status['error']}", file=sys.stderr)
        return 1
    return 3 if status["failed"] else 0


async def _in_process(args: argparse.Namespace) -> dict[str, Any]:
    from app.service.backfill import service_backfill
    from app.service.runtime import running_service

    async with running_service(load_settings()) as service:
        (await service.versions(fresh=True)).check_active(args.version)  # 404 model_not_found otherwise
        progress = tqdm(unit="item", desc=f"backfill {args.version}", disable=None)
        backfill = service_backfill(service, args.version, args.partition, on_item=lambda _: progress.update(1))
        progress.total = await backfill.count_missing()
        progress.refresh()
        status = await backfill.run()
        progress.close()
        return status.as_dict()


async def _over_http(args: argparse.Namespace) -> dict[str, Any]:
    path = f"/models/{args.version}/backfill"
    async with http_client(args.url, args.api_key) as client:
        status = expect(await client.post(path, params={"partition": str(args.partition)}), 202)
        progress = tqdm(total=status["missing_at_start"], unit="item", desc=f"backfill {args.version}", disable=None)
        done = 0
        while True:
            handled = status["embedded"] + status["skipped"] + status["failed"]
            progress.update(handled - done)
            done = handled
            if status["state"] != "running":
                break
            await asyncio.sleep(args.poll_s)
            status = expect(await client.get(path), 200)
        progress.close()
        return status


def _partition(text: str) -> Any:
    from app.service.backfill import Partition

    if not re.fullmatch(r"[0-9]+/[0-9]+", text):  # ASCII digits only: "²".isdigit() is true
        raise argparse.ArgumentTypeError(f"must be I/N (e.g. 0/3): {text!r}")
    try:
        return Partition.parse(text)
    except (LookalikeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(models: Any) -> None:
    """`lookalike models backfill` (models: the `models` subparsers)."""
    bf = models.add_parser("backfill", help="embed with VERSION every item that lacks its vector")
    bf.add_argument("version")
    bf.add_argument(
        "--partition",
        type=_partition,
        default="0/1",
        help="I/N: only this share of the catalog (N workers, one partition each)",
    )
    add_remote(bf, what="to start it in and follow, instead of in-process")
    bf.add_argument("--poll-s", type=positive_float, default=1.0, help=argparse.SUPPRESS)
    bf.set_defaults(run=run)
