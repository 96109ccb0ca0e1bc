"""One runner for the commands that work in-process or against --url: print the JSON answer, or the error."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from app.cli.client import answer_json, error_line, http_client
from app.core.errors import LookalikeError
from app.core.schemas import ErrorBody, ErrorDetail
from app.core.settings import load_settings


def print_error(exc: LookalikeError) -> int:
    """An error of the service code run in-process: its error body on stdout (as over HTTP), one line on stderr."""
    print(json.dumps(ErrorBody(error=ErrorDetail.of(exc)).model_dump(), indent=2))
    print(f"lookalike: {exc.status} {exc.code}: {exc.message}", file=sys.stderr)
    return 1


def print_error_answer(response: httpx.Response) -> int:
    """An error answer of the service: its body on stdout (scripts read the code there), one line on stderr."""
    print(json.dumps(answer_json(response), indent=2))
    print(f"lookalike: {error_line(response)}", file=sys.stderr)
    return 1


async def call(
    args: argparse.Namespace,
    in_process: Callable[[Any], Awaitable[Any]],
    method: str,
    path: str,
    params: dict[str, Any] | None = None,
) -> int:
    """Run one command in-process (`in_process(service)`) or as `method path` against --url; print the JSON answer.

    An error answer's body goes to stdout too (scripts read the code there) and one line to stderr; exit 1.
    """
    if args.url:
        async with http_client(args.url, getattr(args, "api_key", None)) as client:  # reads take no key
            response = await client.request(method, path, params=params)
        if response.status_code >= 300:
            return print_error_answer(response)
        print(json.dumps(answer_json(response), indent=2))
        return 0
    from app.service.runtime import running_service

    async with running_service(load_settings()) as service:
        try:
            body = await in_process(service)
        except LookalikeError as exc:
            return print_error(exc)
    print(json.dumps(body.model_dump(mode="json"), indent=2))
    return 0
