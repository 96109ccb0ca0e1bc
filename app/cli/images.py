"""`lookalike images orphans [--delete]`: kept image files that no item names (crash leftovers), in-process.

A write puts the image file before the store write and deletes the replaced file after it: a crash (or a
failed store write) in between leaves a file no payload's `image_key` names. Only disk space is lost.
Run it while no service writes to this data directory (`--delete` would race a write in flight); the
embedded store refuses to open while a server holds it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from app.core.settings import load_settings
from app.store.images import payload_image_keys

_PAGE = 256  # payloads read per store call


def _known_keys(store: Any) -> set[str]:
    """Every kept-image key the payloads name: each photo's (photos written from a URL have none)."""
    keys: set[str] = set()
    cursor: str | None = None
    while True:
        page = store.list_items(_PAGE, cursor, None, None)
        for payload in page.items:
            keys.update(payload_image_keys(payload))
        cursor = page.next_point
        if cursor is None:
            return keys


def find_orphans(store: Any, image_store: Any, delete: bool) -> list[str]:
    """The keys of kept files that no payload names; deleted too when `delete`."""
    orphans = image_store.orphans(_known_keys(store))
    if delete:
        for key in orphans:
            image_store.delete(key)
    return orphans


async def _orphans(args: argparse.Namespace) -> int:
    from app.service.runtime import running_service

    async with running_service(load_settings()) as service:
        orphans = await asyncio.to_thread(find_orphans, service.store, service.image_store, args.delete)
        root = str(service.image_store.root)
    print(json.dumps({"image_store": root, "orphans": orphans, "deleted": args.delete}, indent=2))
    return 0


def add_parser(sub: Any) -> None:
    images = sub.add_parser("images", help="kept image files: list (and delete) orphans")
    isub = images.add_subparsers(dest="images_command", required=True)
    orphans = isub.add_parser(
        "orphans", help="image files no item names (crash leftovers); run it while no service writes"
    )
    orphans.add_argument("--delete", action="store_true", help="delete them (disk space only)")
    orphans.set_defaults(run=_orphans)
