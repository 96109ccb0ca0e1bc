"""`lookalike experiments list | report | import`: in-process, or --url a running service (import: local only)."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from app.cli.call import print_error, print_error_answer
from app.cli.client import answer_json, answer_text, http_client
from app.cli.options import add_remote
from app.core.errors import LookalikeError
from app.core.settings import load_settings


@asynccontextmanager
async def _registry() -> AsyncIterator[tuple[Any, Any]]:
    """(experiment registry, settings) from the collection's store, opened in-process."""
    from app.service.experiments import experiment_registry
    from app.service.runtime import running_service

    settings = load_settings()
    async with running_service(settings) as service:
        yield experiment_registry(settings, service.store), settings


async def _get(args: argparse.Namespace, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
    async with http_client(args.url, args.api_key) as client:
        return await client.get(path, params=params)


async def _list(args: argparse.Namespace) -> int:
    if args.url:
        response = await _get(args, "/experiments")
        if response.status_code != 200:
            return print_error_answer(response)
        print(json.dumps(answer_json(response), indent=2))
        return 0
    async with _registry() as (registry, _):
        found = await asyncio.to_thread(registry.experiments)
    print(json.dumps({"experiments": [e.model_dump(mode="json") for e in found]}, indent=2))
    return 0


async def _report(args: argparse.Namespace) -> int:
    if args.url:
        response = await _get(args, f"/experiments/{args.name}/report", {"format": args.format})
        if response.status_code != 200:
            return print_error_answer(response)
        if args.format == "json":
            print(json.dumps(answer_json(response), indent=2))
        else:
            print(answer_text(response, "text/html" if args.format == "html" else "text/plain"))
        return 0
    from app.experiments.report import render, report_from_log

    async with _registry() as (registry, settings):
        try:
            experiment = await asyncio.to_thread(registry.get, args.name)
        except LookalikeError as exc:
            return print_error(exc)
    report = await asyncio.to_thread(report_from_log, experiment, settings.events_root())
    print(json.dumps(report, indent=2) if args.format == "json" else render(report, args.format))
    return 0


async def _import(args: argparse.Namespace) -> int:
    """Checks tokens with this data dir's events secret and writes under LOOKALIKE_EVENTS_PATH (no server needed)."""
    from app.experiments.importer import import_events
    from app.experiments.tokens import AttributionTokens
    from app.service.experiments import events_secret

    settings = load_settings()
    tokens = AttributionTokens(events_secret(settings), max_age_s=settings.events_max_age_s)
    try:
        result = await asyncio.to_thread(import_events, args.file, settings.events_root(), tokens)
    except LookalikeError as exc:
        return print_error(exc)
    summary = {"rows": result.rows, "accepted": result.accepted, "rejected": dict(result.rejected)}
    print(json.dumps(summary | {"file": str(result.file) if result.file else None}, indent=2))
    return 0


def _existing_file(text: str) -> str:
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return text


def add_parser(sub: Any) -> None:
    """`lookalike experiments SUBCOMMAND`: each subcommand sets `run` (an async function of the args)."""
    experiments = sub.add_parser("experiments", help="A/B experiments: list, report, import events")
    esub = experiments.add_subparsers(dest="experiments_command", required=True)
    listed = esub.add_parser("list", help="the collection's experiments and their state")
    listed.set_defaults(run=_list)
    add_remote(listed)
    report = esub.add_parser("report", help="an experiment's report: rates, intervals, lift, SRM")
    report.add_argument("name")
    report.add_argument("--format", choices=("table", "json", "html"), default="table")
    add_remote(report)
    report.set_defaults(run=_report)
    imported = esub.add_parser("import", help="import click/purchase logs (CSV, JSONL or Parquet)")
    imported.add_argument("file", type=_existing_file)
    imported.set_defaults(run=_import)
