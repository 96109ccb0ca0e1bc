"""`lookalike models list | promote | retire` (and the group's parser, with backfill and compare)."""

from __future__ import annotations

import argparse
from typing import Any

from app.cli import backfill, compare
from app.cli.call import call
from app.cli.options import add_remote


async def _list(args: argparse.Namespace) -> int:
    return await call(args, lambda service: service.list_models(), "GET", "/models")


async def _promote(args: argparse.Namespace) -> int:
    path, params = f"/models/{args.version}/promote", {"force": "true"} if args.force else None
    return await call(args, lambda service: service.promote(args.version, args.force), "POST", path, params)


async def _retire(args: argparse.Namespace) -> int:
    return await call(args, lambda service: service.retire(args.version), "DELETE", f"/models/{args.version}")


def add_parser(sub: Any) -> None:
    """`lookalike models SUBCOMMAND`: each subcommand sets `run` (an async function of the args)."""
    models = sub.add_parser("models", help="model versions: list, promote, retire, backfill, compare")
    msub = models.add_subparsers(dest="models_command", required=True)

    listed = msub.add_parser("list", help="the collection's model versions, their state and coverage")
    listed.set_defaults(run=_list)
    promote = msub.add_parser("promote", help="make VERSION serve /similar (roll back: promote the old one)")
    promote.add_argument("version")
    promote.add_argument("--force", action="store_true", help="promote although items lack VERSION's vector")
    promote.set_defaults(run=_promote)
    retire = msub.add_parser("retire", help="drop a non-serving VERSION's vectors")
    retire.add_argument("version")
    retire.set_defaults(run=_retire)
    for parser in (listed, promote, retire):
        add_remote(parser)
    backfill.add_parser(msub)
    compare.add_parser(msub)
