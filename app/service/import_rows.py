"""One row of a vector import (`lookalike import`, POST /items/import) -> a checked listing and its vectors.

A row is a POST /items body (item_id, metadata, image_url / image_base64 / images) plus `vector`: one photo's
vector, or one per photo in the photos' order. The fields are checked by the POST /items schema (ItemIn); the
vectors have the model version's dimension, are finite, have a non-zero norm, and are L2-normalised here as the
encoder's output is. The stored payload is then made by the service's own write code (writes.listing_payload), so
a bulk-imported item reads, redirects to its photo and backfills like a posted one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydantic
from pydantic import BaseModel, ConfigDict, Field

from app.core.errors import LookalikeError, validation_message
from app.core.schemas import BATCH_MAX, MODEL_VERSION_PATTERN, ItemIn
from app.service.embedding import Listing, decode_base64

# Columns a row may carry besides the ItemIn fields.
VECTOR_FIELD = "vector"


class ImportIn(BaseModel):
    """POST /items/import: items whose vectors a batch job made with `model_version`; each is checked alone."""

    model_config = ConfigDict(extra="forbid")
    model_version: str = Field(pattern=MODEL_VERSION_PATTERN)
    items: list[Any] = Field(min_length=1, max_length=BATCH_MAX)


class RowError(ValueError):
    """A row that cannot be imported; the message says why (one line)."""


@dataclass(frozen=True)
class ImportRow:
    number: int  # the row's number in its file (1 = the first data row), for reports
    item: ItemIn
    vectors: np.ndarray  # float32 [photos, dim], each row L2-normalised

    def listing(self, max_bytes: int) -> Listing:
        """The listing as a write makes it: each photo a URL, or the bytes of a base64 photo (kept by the caller)."""
        sources: list[bytes | str] = []
        for photo in self.item.photos():
            sources.append(photo.url if photo.url is not None else decode_base64(photo.base64 or "", max_bytes))
        return Listing(self.item.item_id, self.item.metadata(), sources, numbered=self.item.images is not None)


def _photo_entry(entry: Any) -> Any:
    """A photo of `images`: a URL string, base64 text, or the {"url"} / {"base64"} object POST /items takes."""
    if isinstance(entry, str):
        return {"url": entry} if entry.startswith(("http://", "https://")) else {"base64": entry}
    return entry


def item_body(raw: dict[str, Any]) -> dict[str, Any]:
    """A row's columns -> a POST /items body: nulls dropped (a Parquet column a row leaves empty), attributes
    given as JSON text parsed, photo strings of `images` turned into photo objects."""
    body = {k: v for k, v in raw.items() if v is not None and k != VECTOR_FIELD}
    if isinstance(body.get("attributes"), str):
        try:
            body["attributes"] = json.loads(body["attributes"])
        except json.JSONDecodeError as exc:
            raise RowError(f"attributes: not JSON text: {exc}") from None
    if isinstance(body.get("images"), list):
        body["images"] = [_photo_entry(e) for e in body["images"]]
    return body


def _vectors(value: Any, photos: int, dim: int) -> np.ndarray:
    if value is None:
        raise RowError("no vector")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise RowError("vector: not a list of numbers (or one list per photo)") from None
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise RowError(f"vector: expected a list of numbers or one list per photo, got {array.ndim} levels")
    if array.shape[0] != photos:
        raise RowError(f"vector: {array.shape[0]} photo vector(s) for {photos} photo(s)")
    if array.shape[1] != dim:
        raise RowError(f"vector: dimension {array.shape[1]}, the model version's is {dim}")
    if not np.isfinite(array).all():
        raise RowError("vector: not finite (NaN or infinity)")
    norms = np.linalg.norm(array, axis=1)
    if not (norms > 0).all():
        raise RowError("vector: zero norm")
    return (array / norms[:, None]).astype(np.float32)


def check_row(number: int, raw: Any, dim: int, max_photos: int, max_bytes: int) -> ImportRow:
    """Row `number` checked like POST /items plus its vectors; RowError says what is wrong."""
    if not isinstance(raw, dict):
        raise RowError("a row must be an object")
    try:
        item = ItemIn.model_validate(item_body(raw))
    except pydantic.ValidationError as exc:
        raise RowError(validation_message(exc.errors())) from None
    photos = len(item.photos())
    if photos > max_photos:
        raise RowError(f"{photos} photos; a listing has at most {max_photos} (LOOKALIKE_MAX_PHOTOS)")
    for i, photo in enumerate(item.photos()):
        if photo.base64 is not None:
            try:
                decode_base64(photo.base64, max_bytes)
            except LookalikeError as exc:
                raise RowError(f"photo {i}: {exc.message}") from None
    return ImportRow(number, item, _vectors(raw.get(VECTOR_FIELD), photos, dim))
