"""The bodies of a listing's photos: each photo given (`images`), each photo shown, the pair that matched."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PhotoIn(BaseModel):
    """One photo of a listing in `images`: a URL to fetch or the bytes in base64."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, min_length=1, max_length=2048)
    base64: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_source(self) -> PhotoIn:
        if (self.url is None) == (self.base64 is None):
            raise ValueError("give exactly one of url or base64")
        return self


class PhotoOut(BaseModel):
    """One photo of a listing: GET /items/{id}/images/{n} gives it (bytes, or a redirect to image_url)."""

    image_url: str | None = None  # the URL it was written from (null: its bytes are kept)
    boilerplate: bool = False  # on many listings (a size chart, a logo): shown, never used to rank


def with_photos(payload: Any) -> Any:
    """A stored payload -> its `photos` and `photo_count` (a listing written before several photos: its one photo).

    Boilerplate marks (app/service/boilerplate.py): `boilerplate` = {"write_id", "photos"}, valid for that write.
    """
    if not isinstance(payload, dict) or "photo_count" in payload:
        return payload
    photos = payload.get("photos")
    if not isinstance(photos, list) or not photos:
        photos = [{"image_url": payload.get("image_url")}]
    mark = payload.get("boilerplate")
    marked = mark.get("photos") if isinstance(mark, dict) and mark.get("write_id") == payload.get("write_id") else []
    marked = marked if isinstance(marked, list) else []
    shown = [{"image_url": p.get("image_url"), "boilerplate": i in marked} for i, p in enumerate(photos)]
    return {**payload, "photos": shown, "photo_count": len(shown)}


class Matched(BaseModel):
    """The pair of photos that made a match: the query listing's photo, the result's photo, their cosine."""

    query_photo: int
    photo: int
    score: float
