"""Request bodies of the HTTP contract (app/core/schemas.py), checked without an app."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from pydantic import ValidationError

from app.core.schemas import ItemIn
from tests.strategies import FAST, payloads


@FAST
@given(body=payloads)
def test_item_model_accepts_or_raises_validation_error_only(body: dict[str, Any]) -> None:
    try:
        item = ItemIn.model_validate(body)
    except ValidationError:
        return
    assert (item.image_url is None) != (item.image_base64 is None)
    assert item.price is None or item.price >= 0
    json.dumps(item.model_dump()).encode("utf-8")  # whatever is accepted can be stored and sent back
