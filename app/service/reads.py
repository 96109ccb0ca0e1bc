"""Reads: one item, its look-alikes (of an item or of a photo), a page of items, an item's photo.

store.similar(item_id, k, filters, version), version = the serving one unless the request names another.
The look-alike reads (GET /similar, POST /similar) are counted in ReadTraffic: a backfill yields to them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import math
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from app.core.errors import ImageNotFound, InvalidCursor, ItemNotFound, ModelNotFound
from app.core.schemas import (
    ItemListQuery,
    ItemOut,
    ItemPageOut,
    SimilarImageFields,
    SimilarImageResponse,
    SimilarItem,
    SimilarQuery,
    SimilarResponse,
)
from app.ingest.decode import sniff_format
from app.service.embedding import Embedder, Pending
from app.service.store_access import StoreAccess
from app.store.base import Hit, PhotoMatch, SimilarFilters
from app.store.images import ImageStore

IMAGE_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "WEBP": "image/webp",
}


@dataclass(frozen=True)
class KeptImage:
    data: bytes
    content_type: str
    etag: str  # the write_id: a new image write changes it, a patch does not


class ReadTraffic:
    """Look-alike reads in progress and when the last one ended: what a backfill yields to (app/service/backfill.py).

    Reads take no admission permit, so without this a backfill cannot tell a reading service from an idle one.
    Single event loop: entered and left on the loop thread, so a plain counter is enough.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.in_flight = 0
        self._last_end = -math.inf

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self._last_end = self._clock()

    def quiet_s(self) -> float:
        """Seconds since the last read ended; 0 while one is in flight (inf when none ever ran)."""
        return 0.0 if self.in_flight else self._clock() - self._last_end


class ItemReads:
    def __init__(
        self, access: StoreAccess, embedder: Embedder, image_store: ImageStore, traffic: ReadTraffic | None = None
    ) -> None:
        self._access = access
        self._embedder = embedder
        self._image_store = image_store
        self.traffic = traffic or ReadTraffic()

    async def get(self, item_id: str) -> ItemOut:
        payload = await self._access.call("get", self._access.store.get, item_id)
        if payload is None:
            raise ItemNotFound(item_id)
        return ItemOut.model_validate(payload)

    async def similar(self, item_id: str, query: SimilarQuery) -> SimilarResponse:
        with self.traffic.reading():
            return await self._similar(item_id, query)

    async def _similar(self, item_id: str, query: SimilarQuery) -> SimilarResponse:
        version = (await self._access.versions()).check_active(query.model_version)
        store = self._access.store
        hits: list[Hit] | None = await self._access.call(
            "similar", store.similar, item_id, query.k, _filters(query), version
        )
        if hits is None:
            raise ItemNotFound(item_id)
        return SimilarResponse(item_id=item_id, model_version=version, results=_similar_items(hits))

    async def similar_to_image(self, image: bytes | str, query: SimilarImageFields) -> SimilarImageResponse:
        """Top-k look-alikes of a photo (bytes, or a URL to fetch) that is embedded and never stored.

        The photo takes the write path's way to the encoder (app/service/embedding.py: admission, fetch guard,
        decode limits, micro-batching), so it is refused (429, 413, 415, 422...) exactly as a POST /items would be.
        """
        with self.traffic.reading():
            return await self._similar_to_image(image, query)

    async def _similar_to_image(self, image: bytes | str, query: SimilarImageFields) -> SimilarImageResponse:
        version = (await self._access.versions()).check_active(query.model_version)
        if self._embedder.models.get(version) is None:
            raise ModelNotFound(f"model version {version!r} has no model file loaded here to embed the photo")
        vector = (await self._embedder.admitted(Pending("", {}, image), [version])).vectors[version]
        filters = _filters(query, seller_id=query.seller_id)
        store = self._access.store
        hits: list[Hit] = await self._access.call(
            "similar_to_vector", store.similar_to_vector, vector, query.k, filters, version
        )
        return SimilarImageResponse(model_version=version, results=_similar_items(hits))

    async def list_items(self, query: ItemListQuery) -> ItemPageOut:
        start = None if query.cursor is None else _cursor_point(query.cursor)
        store = self._access.store
        page = await self._access.call("list_items", store.list_items, query.limit, start, query.category, query.status)
        return ItemPageOut(
            items=[ItemOut.model_validate(item) for item in page.items],
            next_cursor=None if page.next_point is None else _point_cursor(page.next_point),
        )

    async def image(self, item_id: str, n: int = 0) -> KeptImage | str:
        """Photo n of the listing (0: the cover): its kept bytes, or the URL it was written from."""
        payload = await self._access.call("get", self._access.store.get, item_id)
        if payload is None:
            raise ItemNotFound(item_id)
        photos = payload.get("photos")
        if not isinstance(photos, list) or not photos:  # a listing from before several photos: its cover
            photos = [payload]
        if not 0 <= n < len(photos):
            raise ImageNotFound(f"item {item_id!r} has {len(photos)} photo(s): no photo {n}")
        key, url = photos[n].get("image_key"), photos[n].get("image_url")
        if isinstance(key, str):
            data = await asyncio.to_thread(self._image_store.get, key)
            if data is not None:
                fmt = sniff_format(data) or "octet-stream"
                etag = str(payload.get("write_id") or key.rpartition("-")[2])
                return KeptImage(data, IMAGE_TYPES.get(fmt, "application/octet-stream"), etag)
        if isinstance(url, str):
            return url
        raise ImageNotFound(f"no image is kept for item {item_id!r}")


def _filters(query: SimilarQuery, seller_id: str | None = None) -> SimilarFilters:
    """GET /similar's filters (POST /similar names the seller to leave out: a photo has none)."""
    return SimilarFilters(
        category=query.category,
        min_price=query.min_price,
        max_price=query.max_price,
        include_sold=query.include_sold,
        exclude_same_seller=query.exclude_same_seller,
        seller_id=seller_id,
    )


def _similar_items(hits: list[Hit]) -> list[SimilarItem]:
    # SimilarItem keeps the payload fields it declares and drops the rest (attributes, indexed_at...)
    return [
        SimilarItem.model_validate(
            {**h.payload, "item_id": h.item_id, "score": h.score, "matched": _matched(h.matched)}
        )
        for h in hits
    ]


def _matched(match: PhotoMatch | None) -> dict[str, Any] | None:
    if match is None:
        return None
    return {"query_photo": match.query_photo, "photo": match.photo, "score": match.score}


_CURSOR = re.compile(r"[A-Za-z0-9_-]{21}[AQgw]")  # 16 bytes: the last character carries 2 bits


def _point_cursor(point: str) -> str:
    """The opaque GET /items cursor: the point id the next page starts at, as 22 URL-safe characters."""
    return base64.urlsafe_b64encode(uuid.UUID(point).bytes).decode("ascii").rstrip("=")


def _cursor_point(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "==") if _CURSOR.fullmatch(cursor) else b""
        return str(uuid.UUID(bytes=raw))
    except (binascii.Error, ValueError):
        raise InvalidCursor("cursor is not one this service handed out; start again without a cursor") from None
