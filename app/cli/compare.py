"""`lookalike models compare V1 V2`: two versions' look-alike lists on a seeded sample of items."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx

from app.cli.client import error_code, expect, http_client
from app.cli.options import add_remote, field_type, int_range
from app.core.errors import LookalikeError
from app.core.schemas import ItemListQuery, SimilarQuery
from app.core.settings import load_settings

_PAGE = 200  # ids a page when listing the catalog
_MAX_PAGES = 1_000_000


async def run(args: argparse.Namespace) -> int:
    from app.service.compare import compare, render, sample_ids

    if args.url:
        async with http_client(args.url) as client:  # reads: no key
            ids = await _http_item_ids(client)
            report = await compare(
                _http_ranker(client), sample_ids(ids, args.sample, args.seed), args.v1, args.v2, args.k
            )
    else:
        from app.service.runtime import running_service

        async with running_service(load_settings()) as service:
            ids = await _service_item_ids(service)
            report = await compare(
                _service_ranker(service), sample_ids(ids, args.sample, args.seed), args.v1, args.v2, args.k
            )
    print(json.dumps(report.as_dict(), indent=2) if args.json else render(report))
    if report.compared:
        return 0
    print(
        f"lookalike: no sampled item is ranked by both {args.v1} and {args.v2} "
        f"(empty catalog, or a version lacks vectors: lookalike models backfill VERSION)",
        file=sys.stderr,
    )
    return 1


async def _http_item_ids(client: httpx.AsyncClient) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        params: dict[str, Any] = {"limit": _PAGE} | ({"cursor": cursor} if cursor else {})
        page = expect(await client.get("/items", params=params), 200)
        ids += [item["item_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    return ids


def _http_ranker(client: httpx.AsyncClient) -> Any:
    async def rank(item_id: str, version: str, k: int) -> list[tuple[str, float]] | None:
        response = await client.get(f"/similar/{item_id}", params={"k": k, "model_version": version})
        if response.status_code in (404, 409) and error_code(response) in ("model_not_ready", "item_not_found"):
            return None
        return [(r["item_id"], r["score"]) for r in expect(response, 200)["results"]]

    return rank


async def _service_item_ids(service: Any) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        page = await service.list_items(ItemListQuery(limit=_PAGE, cursor=cursor))
        ids += [item.item_id for item in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    return ids


def _service_ranker(service: Any) -> Any:
    async def rank(item_id: str, version: str, k: int) -> list[tuple[str, float]] | None:
        try:
            answer = await service.similar(item_id, SimilarQuery(k=k, model_version=version))
        except LookalikeError as exc:
            if exc.code in ("model_not_ready", "item_not_found"):
                return None
            raise
        return [(r.item_id, r.score) for r in answer.results]

    return rank


def add_parser(models: Any) -> None:
    """`lookalike models compare` (models: the `models` subparsers)."""
    cmp = models.add_parser("compare", help="compare two versions' look-alike lists on a sample of items")
    cmp.add_argument("v1")
    cmp.add_argument("v2")
    cmp.add_argument("--sample", type=int_range(1), default=200, help="items sampled (seeded)")
    cmp.add_argument("--seed", type=int_range(0), default=0)
    cmp.add_argument("--k", type=field_type(SimilarQuery, "k"), default=10, help="look-alikes compared (1..100)")
    add_remote(cmp, key=False, what="instead of opening the store in-process")
    cmp.add_argument("--json", action="store_true", help="the report as JSON")
    cmp.set_defaults(run=run)
