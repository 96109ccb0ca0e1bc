"""Argument types that refuse a bad value at parse time (argparse's usage line, exit 2), and the --url options."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Annotated, Any

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from app.core.schemas import ItemId


def _from_adapter(adapter: TypeAdapter[Any], name: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return adapter.validate_python(text)
        except ValidationError as exc:
            message = exc.errors()[0]["msg"]
            raise argparse.ArgumentTypeError(f"{message[:1].lower()}{message[1:]}: {text!r}") from None

    parse.__name__ = name  # argparse names the type in its "invalid <name> value" message
    return parse


def field_type(model: type[BaseModel], name: str) -> Callable[[str], Any]:
    """The type of `model.name` with its bounds: the command refuses what the service would refuse."""
    field = model.model_fields[name]
    return _from_adapter(TypeAdapter(Annotated[field.annotation, *field.metadata]), name)


item_id = _from_adapter(TypeAdapter(ItemId), "item_id")


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An int in [low, high] (no upper bound when high is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"{low}..{high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}: {text!r}")
        return value

    parse.__name__ = "int"
    return parse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def url(text: str) -> str:
    """A service's base address: http(s)://host[:port]."""
    try:
        parsed = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise argparse.ArgumentTypeError(f"{exc}: {text!r}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host or not 0 < (parsed.port or 80) < 65536:
        raise argparse.ArgumentTypeError(f"not an http(s)://host[:port] address: {text!r}")
    return text


def add_remote(parser: argparse.ArgumentParser, *, key: bool = True, what: str = "instead of in-process") -> None:
    """--url (and --api-key): run the command against a running service."""
    parser.add_argument("--url", type=url, help=f"a running service (e.g. http://127.0.0.1:8000) {what}")
    if key:
        parser.add_argument("--api-key", help="bearer key when the service sets LOOKALIKE_API_KEY")
