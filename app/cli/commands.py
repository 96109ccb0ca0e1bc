"""The `lookalike` parser (one module per command group) and `main`, which turns every failure into one line.

Exit codes: 0 done; 1 the command failed (error answer, unreachable service, failed run); 2 bad arguments or
settings (argparse's usage line); 3 done, but some items failed (index, import, backfill); 130 interrupted.
`import` exits 2 also when its spot-check refuses the file.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import httpx

from app.cli import experiments, images, imports, index, models, similar
from app.cli.client import CommandError, unreachable
from app.cli.options import int_range
from app.core.errors import LookalikeError
from app.core.settings import SettingsError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lookalike", description="Visually similar marketplace listings")
    sub = p.add_subparsers(dest="command", required=True)
    index.add_parser(sub)
    imports.add_parser(sub)
    similar.add_parser(sub)
    models.add_parser(sub)
    experiments.add_parser(sub)
    images.add_parser(sub)
    sub.add_parser("serve", help="run the HTTP service (same as python -m app)")
    demo = sub.add_parser("demo", help="generated catalog + photo server + service, indexed: see the web page")
    demo.add_argument("--items", type=int_range(8), default=200, help="catalog size (at least 8)")
    demo.add_argument("--port", type=int_range(1, 65535), default=8000, help="the service's port on 127.0.0.1")
    demo.add_argument("--data", default="data/demo", help="where the catalog and the models are cached")
    demo.add_argument("--quick", action="store_true", help="no fine-tune: the configured (or a random) model only")
    demo.add_argument(
        "--steps", type=int_range(1), default=150, help="fine-tuning steps (on --items 200, about a minute)"
    )
    return p


def _demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

    try:
        return run_demo(args.items, args.port, Path(args.data), quick=args.quick, steps=args.steps)
    except (SettingsError, RuntimeError, ImportError) as exc:
        print(f"lookalike demo: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    """The command's coroutine; an error raised inside a task group is told as itself, not as the group."""
    try:
        return asyncio.run(args.run(args))
    except ExceptionGroup as group:
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # bad arguments: usage line, exit 2
    try:
        if args.command == "serve":
            from app.__main__ import main as serve

            return serve()
        if args.command == "demo":
            return _demo(args)
        return _run(args)
    except KeyboardInterrupt:
        print("lookalike: interrupted", file=sys.stderr)
        return 130
    except SettingsError as exc:
        print(f"lookalike: {_one_line(exc)}", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:  # refused, timed out, cut off: no (whole) answer
        print(f"lookalike: {unreachable(getattr(args, 'url', None) or '?', exc)}", file=sys.stderr)
        return 1
    except (LookalikeError, CommandError, OSError, RuntimeError) as exc:  # RuntimeError: e.g. no model file
        print(f"lookalike: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: still one line, never a traceback for the operator
        print(f"lookalike: unexpected {type(exc).__name__}: {_one_line(exc)} (please report it)", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
