"""The error model: every LookalikeError subclass has a code, an HTTP status and (for 429/503) a
Retry-After, and docs/api.md's error table lists exactly these codes with the same statuses."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import app
from app.core.errors import LookalikeError, validation_message

API_PAGE = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def all_error_classes() -> list[type[LookalikeError]]:
    # Import every app module first: a subclass defined in a module nobody imported yet would be missed.
    for module in pkgutil.walk_packages(app.__path__, prefix="app."):
        importlib.import_module(module.name)
    found: list[type[LookalikeError]] = []
    todo = list(LookalikeError.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def documented_error_table() -> dict[str, int]:
    """code -> status from the table `| status | code, code | when |` under docs/api.md's "## Errors"."""
    errors = API_PAGE.read_text(encoding="utf-8").split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in errors.splitlines() if line.startswith("|")][2:]  # after the header and |---|
    assert rows, "no error table under docs/api.md's Errors heading"
    codes: dict[str, int] = {}
    for row in rows:
        status, cell = (c.strip() for c in row.strip("|").split("|")[:2])
        for code in cell.split(","):
            assert code.strip() not in codes, f"{code} appears twice in docs/api.md's error table"
            codes[code.strip()] = int(status)
    return codes


def test_every_error_class_has_a_code_and_an_error_status() -> None:
    classes = all_error_classes()
    assert len(classes) >= 15  # the walk found the classes, not just a few
    for cls in classes:
        assert re.fullmatch(r"[a-z][a-z_]*", getattr(cls, "code", "")), f"{cls.__name__} has no error code"
        assert isinstance(getattr(cls, "status", None), int) and 400 <= cls.status <= 599, cls.__name__
        if cls.status in (429, 503):
            assert isinstance(cls.retry_after_s, int) and cls.retry_after_s > 0, f"{cls.__name__} needs Retry-After"
        else:
            assert cls.retry_after_s is None, f"{cls.__name__}: Retry-After only for 429 and 503"
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes)), f"two classes share a code: {sorted(codes)}"


def test_api_page_error_table_lists_every_code_with_its_status() -> None:
    from_classes = {cls.code: cls.status for cls in all_error_classes()}
    assert documented_error_table() == from_classes


def test_validation_message_names_fields_as_the_caller_knows_them() -> None:
    errors = [
        {"loc": ("body", "items", 0, "price"), "msg": "Input should be greater than or equal to 0"},
        {"loc": ("query", "k"), "msg": "Input should be less than or equal to 100"},
        {"loc": (), "msg": "Value error, give exactly one of image_url or image_base64"},
    ]
    assert validation_message(errors) == (
        "items.0.price: Input should be greater than or equal to 0; "
        "query.k: Input should be less than or equal to 100; "
        "body: Value error, give exactly one of image_url or image_base64"
    )
    settings_errors = [{"loc": ("port",), "msg": "too big"}, {"loc": (), "msg": "bad"}]
    assert validation_message(settings_errors, whole="settings", name=str.upper) == "PORT: too big; settings: bad"


def test_each_error_class_is_named_after_its_code() -> None:
    # `item_not_found` is ItemNotFound; a trailing "Error" is allowed (`internal`: InternalError).
    for cls in all_error_classes():
        camel = "".join(part.capitalize() for part in cls.code.split("_"))
        assert cls.__name__ in (camel, camel + "Error"), f"{cls.__name__} answers with the code {cls.code!r}"
