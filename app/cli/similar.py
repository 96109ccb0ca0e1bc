"""`lookalike similar ITEM_ID`: an item's look-alikes, in-process or from a running service."""

from __future__ import annotations

import argparse
from typing import Any

from app.cli.call import call
from app.cli.options import add_remote, field_type, item_id
from app.core.schemas import SimilarQuery


async def run(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"k": args.k, "include_sold": args.include_sold}
    if args.category:
        params["category"] = args.category
    if args.model_version:
        params["model_version"] = args.model_version
    query = SimilarQuery.model_validate(params)
    return await call(
        args, lambda service: service.similar(args.item_id, query), "GET", f"/similar/{args.item_id}", params
    )


def add_parser(sub: Any) -> None:
    sim = sub.add_parser("similar", help="print the look-alikes of an item")
    sim.add_argument("item_id", type=item_id)
    sim.add_argument("--k", type=field_type(SimilarQuery, "k"), default=10, help="how many (1..100)")
    sim.add_argument("--category", type=field_type(SimilarQuery, "category"))
    sim.add_argument("--include-sold", action="store_true")
    sim.add_argument(
        "--model-version",
        type=field_type(SimilarQuery, "model_version"),
        help="rank with this active model version (default: the serving one)",
    )
    add_remote(sim, key=False, what="instead of opening the store in-process")
    sim.set_defaults(run=run)
