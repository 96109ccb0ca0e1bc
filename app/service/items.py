"""The service: what each route does, with no HTTP in it (the CLI uses it in-process too).

write: image bytes (upload, base64 or URL) -> decode + resize (thread) -> micro-batcher -> store.upsert
read:  store.similar(item_id, k, filters)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from pydantic import ValidationError

from app.core import metrics
from app.core.errors import (
    ImageNotFound,
    ImageTooLarge,
    InvalidCursor,
    ItemNotFound,
    LookalikeError,
    ModelNotFound,
    Overloaded,
    StoreUnavailable,
    ValidationFailed,
    validation_message,
)
from app.core.schemas import (
    BatchResult,
    InfoOut,
    ItemIn,
    ItemListQuery,
    ItemOut,
    ItemPageOut,
    ItemPatch,
    ItemWriteOut,
    SimilarImageFields,
    SimilarImageResponse,
    SimilarItem,
    SimilarQuery,
    SimilarResponse,
)
from app.core.settings import Settings
from app.encode.batcher import MicroBatcher
from app.encode.encoder import OnnxImageEncoder
from app.ingest.admission import Budget
from app.ingest.decode import load_pixels
from app.ingest.fetch import ImageFetcher
from app.store.base import Hit, SimilarFilters, VectorStore
from app.store.guard import StoreGuard

T = TypeVar("T")


@dataclass(frozen=True)
class _Pending:
    item_id: str
    metadata: dict[str, Any]
    image: bytes | str  # raw bytes, or an image URL still to fetch


class ItemService:
    """Answers with the response models of app/core/schemas.py; errors are LookalikeError subclasses."""

    def __init__(
        self,
        settings: Settings,
        encoder: OnnxImageEncoder,
        store: VectorStore,
        batcher: MicroBatcher,
        fetcher: ImageFetcher,
        images: Budget,
    ) -> None:
        self.settings = settings
        self.encoder = encoder
        self.store = store
        self.batcher = batcher
        self.fetcher = fetcher
        self.images = images  # admission: one permit per image from before its download to its vector
        # Decodes at once: each may take IMAGE_MAX_PIXELS x 4 bytes (and a copy) while it converts; admitted
        # images beyond these wait here holding only their (budgeted) bytes.
        self._decode_slots = asyncio.Semaphore(settings.decode_concurrency())
        self._guard = StoreGuard(
            timeout_s=settings.qdrant_timeout_s,
            cooldown_s=settings.store_breaker_cooldown_s,
            workers=settings.store_workers,
        )

    def close(self) -> None:
        """Stop the store-call pool after the calls in progress (before the store itself is closed)."""
        self._guard.close()

    @property
    def model_version(self) -> str:
        return self.encoder.model_version

    # ---- writes -------------------------------------------------------------------------------------

    async def index_item(self, item: ItemIn) -> ItemWriteOut:
        return (await self._index_all([self._pending(item)]))[0]

    async def index_upload(self, item_id: str, metadata: dict[str, Any], data: bytes) -> ItemWriteOut:
        return (await self._index_all([_Pending(item_id, metadata, data)]))[0]

    async def index_items(self, raw_items: list[dict[str, Any]]) -> list[BatchResult]:
        """Validate, embed and store each item independently; one bad item never fails the others."""
        results: list[BatchResult | None] = [None] * len(raw_items)
        pending: list[tuple[int, _Pending]] = []
        seen: set[str] = set()
        for i, raw in enumerate(raw_items):
            given_id = raw.get("item_id") if isinstance(raw, dict) else None
            given_id = given_id if isinstance(given_id, str) else None
            try:
                item = ItemIn.model_validate(raw)
                if item.item_id in seen:
                    raise ValidationFailed(f"item_id {item.item_id!r} appears more than once in this batch")
                seen.add(item.item_id)
                pending.append((i, self._pending(item)))
            except ValidationError as exc:
                results[i] = BatchResult.failed(given_id, ValidationFailed(validation_message(exc.errors())))
            except LookalikeError as exc:
                results[i] = BatchResult.failed(given_id, exc)
        # Admission item by item: the tasks start in item order and each takes its permit (or its 429)
        # before its first await, so the first items get the free permits and the rest are refused.
        embedded = await asyncio.gather(*(self._admitted_embed(p) for _, p in pending), return_exceptions=True)
        ready: list[tuple[int, _Pending, np.ndarray]] = []
        for (i, p), outcome in zip(pending, embedded, strict=True):
            if isinstance(outcome, LookalikeError):
                results[i] = BatchResult.failed(p.item_id, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                ready.append((i, p, outcome))
        if ready:
            try:
                written = await self._upsert([p for _, p, _ in ready], np.stack([v for _, _, v in ready]))
            except LookalikeError as exc:
                for i, p, _ in ready:
                    results[i] = BatchResult.failed(p.item_id, exc)
            else:
                for (i, _, _), result in zip(ready, written, strict=True):
                    results[i] = BatchResult(item_id=result.item_id, status=201 if result.created else 200)
        return [r for r in results if r is not None]

    def _pending(self, item: ItemIn) -> _Pending:
        if item.image_url is not None:
            return _Pending(item.item_id, item.metadata(), item.image_url)
        return _Pending(item.item_id, item.metadata(), self._decode_base64(item.image_base64 or ""))

    def _decode_base64(self, text: str) -> bytes:
        if text.startswith("data:") and "," in text:  # accept data URLs as browsers produce them
            text = text.split(",", 1)[1]
        if len(text) > (self.settings.fetch_max_bytes * 4) // 3 + 4:
            raise ImageTooLarge(f"the image is over the limit of {self.settings.fetch_max_bytes} bytes")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationFailed("image_base64 is not valid base64") from None

    async def _admitted_embed(self, pending: _Pending) -> np.ndarray:
        """_embed under one image permit: 429 at once when none is free; given back however it ends."""
        with self.images.hold():
            return await self._embed(pending)

    async def _embed(self, pending: _Pending) -> np.ndarray:
        """Download, decode and encode one image (the caller holds its permit)."""
        # Shed before the costly part: a full queue answers 429 before any download or decode.
        if self.batcher.saturated():
            raise Overloaded(f"the encoder queue is full ({self.batcher.queue_max} images); retry shortly")
        data = pending.image
        if isinstance(data, str):
            data = await self.fetcher.fetch(data)
        if len(data) > self.settings.fetch_max_bytes:
            raise ImageTooLarge(f"the image is over the limit of {self.settings.fetch_max_bytes} bytes")
        # From here the image reaches the encoder within one decode: announce it, so that a batch
        # opening meanwhile waits for it (a failed decode or a cancelled request withdraws it).
        with self.batcher.reserve() as slot:
            async with self._decode_slots:
                meta = self.encoder.meta
                pixels = await asyncio.to_thread(
                    load_pixels,
                    data,
                    meta.image_size,
                    self.settings.image_max_pixels,
                    meta.resample,
                    self.settings.decode_draft,
                )
            return await slot.submit(pixels, self.settings.request_timeout_s)

    async def _index_all(self, pending: list[_Pending]) -> list[ItemWriteOut]:
        vectors = [await self._admitted_embed(p) for p in pending]
        return await self._upsert(pending, np.stack(vectors))

    async def _upsert(self, pending: list[_Pending], vectors: np.ndarray) -> list[ItemWriteOut]:
        now = time.time()
        payloads = [self._payload(p, now) for p in pending]
        created = await self._store("upsert", self.store.upsert, payloads, vectors)
        metrics.items_indexed.inc(len(pending))
        return [
            ItemWriteOut(item_id=p.item_id, model_version=self.model_version, created=c)
            for p, c in zip(pending, created, strict=True)
        ]

    def _payload(self, pending: _Pending, now: float) -> dict[str, Any]:
        fields = {k: v for k, v in pending.metadata.items() if v is not None}
        if isinstance(pending.image, str):  # written from a URL: keep it (GET /items/{id}/image redirects to it)
            fields["image_url"] = pending.image
        return {"item_id": pending.item_id, **fields, "model_version": self.model_version, "indexed_at": now}

    async def patch(self, item_id: str, patch: ItemPatch) -> ItemOut:
        payload = await self._store("patch", self.store.patch, item_id, patch.changes())
        if payload is None:
            raise ItemNotFound(item_id)
        return ItemOut.model_validate(payload)

    async def delete(self, item_id: str) -> None:
        if not await self._store("delete", self.store.delete, item_id):
            raise ItemNotFound(item_id)

    # ---- reads --------------------------------------------------------------------------------------

    async def get(self, item_id: str) -> ItemOut:
        payload = await self._store("get", self.store.get, item_id)
        if payload is None:
            raise ItemNotFound(item_id)
        return ItemOut.model_validate(payload)

    async def similar(self, item_id: str, query: SimilarQuery) -> SimilarResponse:
        version = getattr(query, "model_version", None)
        if version is not None and version != self.model_version:
            raise ModelNotFound(f"model version {version!r} is not served (serving {self.model_version!r})")
        filters = SimilarFilters(
            category=query.category,
            min_price=query.min_price,
            max_price=query.max_price,
            include_sold=query.include_sold,
            exclude_same_seller=query.exclude_same_seller,
        )
        hits: list[Hit] | None = await self._store("similar", self.store.similar, item_id, query.k, filters)
        if hits is None:
            raise ItemNotFound(item_id)
        return SimilarResponse(
            item_id=item_id,
            model_version=self.model_version,
            results=_similar_items(hits),
        )

    # ---- search by photo, browsing, the page ---------------------------------------------------------

    async def similar_to_image(self, image: bytes | str, query: SimilarImageFields) -> SimilarImageResponse:
        """Top-k look-alikes of a photo (bytes, or a URL to fetch) that is embedded and never stored.

        The photo takes the write path's way to the encoder (`_embed`: admission, fetch guard, decode
        limits, micro-batching), so it is refused (429, 413, 415, 422...) exactly as a POST /items would be.
        """
        if query.model_version is not None and query.model_version != self.model_version:
            raise ModelNotFound(f"model version {query.model_version!r} is not served (serving {self.model_version!r})")
        vector = await self._admitted_embed(_Pending("", {}, image))
        filters = SimilarFilters(
            category=query.category,
            min_price=query.min_price,
            max_price=query.max_price,
            include_sold=query.include_sold,
            exclude_same_seller=query.exclude_same_seller,
            seller_id=query.seller_id,
        )
        hits: list[Hit] = await self._store("similar_to_vector", self.store.similar_to_vector, vector, query.k, filters)
        return SimilarImageResponse(model_version=self.model_version, results=_similar_items(hits))

    def decode_base64_image(self, text: str) -> bytes:
        return self._decode_base64(text)

    async def list_items(self, query: ItemListQuery) -> ItemPageOut:
        start = None if query.cursor is None else _cursor_point(query.cursor)
        page = await self._store("list_items", self.store.list_items, query.limit, start, query.category, query.status)
        return ItemPageOut(
            items=[ItemOut.model_validate(item) for item in page.items],
            next_cursor=None if page.next_point is None else _point_cursor(page.next_point),
        )

    async def image_url(self, item_id: str) -> str:
        """Where the item's photo is: the URL it was written from (no image bytes are kept yet)."""
        url = (await self.get(item_id)).image_url
        if not isinstance(url, str):
            raise ImageNotFound(f"no image is kept for item {item_id!r} (it was written from bytes, not a URL)")
        return url

    def info(self) -> InfoOut:
        # models.export names random-weight models "siglip-<config>-random-<precision>-<sha>"
        return InfoOut(model_version=self.model_version, random_weights="-random-" in self.model_version)

    async def ready(self) -> bool:
        if self.batcher.saturated():
            return False
        try:
            await self._store("ready", self._store_ready)
        except StoreUnavailable:
            return False
        return True

    def _store_ready(self) -> None:
        # A store that says "not ready" counts as a failure, so the breaker stays open until it is.
        if not self.store.ready():
            raise StoreUnavailable("the vector store reports not ready")

    async def _store(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        started = time.perf_counter()
        try:
            return await self._guard.call(fn, *args)
        except Exception:
            metrics.store_errors.labels(op=op).inc()
            raise
        finally:
            metrics.store_duration.labels(op=op).observe(time.perf_counter() - started)


def _similar_items(hits: list[Hit]) -> list[SimilarItem]:
    # SimilarItem keeps the payload fields it declares and drops the rest (attributes, indexed_at...)
    return [SimilarItem.model_validate({**h.payload, "item_id": h.item_id, "score": h.score}) for h in hits]


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
