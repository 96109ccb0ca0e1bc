"""The service: what each route does, with no HTTP in it (the CLI uses it in-process too).

write: image bytes (upload, base64 or URL) -> decode + resize (thread) -> micro-batcher -> store.upsert
read:  store.similar(item_id, k, filters)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from pydantic import ValidationError

from app.core import metrics
from app.core.errors import (
    ImageTooLarge,
    ItemNotFound,
    LookalikeError,
    Overloaded,
    StoreUnavailable,
    ValidationFailed,
    status_of,
)
from app.core.schemas import ItemIn, ItemPatch, SimilarQuery
from app.core.settings import Settings
from app.encode.batcher import MicroBatcher
from app.encode.encoder import OnnxImageEncoder
from app.ingest.admission import Budget
from app.ingest.decode import load_pixels
from app.ingest.fetch import ImageFetcher
from app.store.base import Hit, SimilarFilters, StoreUnavailableError, VectorStore
from app.store.guard import StoreGuard

T = TypeVar("T")
SIMILAR_FIELDS = ("title", "category", "price", "seller_id", "status")


@dataclass(frozen=True)
class WriteResult:
    item_id: str
    model_version: str
    created: bool


@dataclass(frozen=True)
class BatchItemResult:
    item_id: str | None
    status: int
    error: LookalikeError | None = None


@dataclass(frozen=True)
class _Pending:
    item_id: str
    metadata: dict[str, Any]
    image: bytes | str  # raw bytes, or an image URL still to fetch


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


class ItemService:
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

    async def index_item(self, item: ItemIn) -> WriteResult:
        return (await self._index_all([self._pending(item)]))[0]

    async def index_upload(self, item_id: str, metadata: dict[str, Any], data: bytes) -> WriteResult:
        return (await self._index_all([_Pending(item_id, metadata, data)]))[0]

    async def index_items(self, raw_items: list[dict[str, Any]]) -> list[BatchItemResult]:
        """Validate, embed and store each item independently; one bad item never fails the others."""
        results: list[BatchItemResult | None] = [None] * len(raw_items)
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
                results[i] = self._failed(given_id, ValidationFailed(validation_message(exc)))
            except LookalikeError as exc:
                results[i] = self._failed(given_id, exc)
        # Admission item by item: the tasks start in item order and each takes its permit (or its 429)
        # before its first await, so the first items get the free permits and the rest are refused.
        embedded = await asyncio.gather(*(self._admitted_embed(p) for _, p in pending), return_exceptions=True)
        ready: list[tuple[int, _Pending, np.ndarray]] = []
        for (i, p), outcome in zip(pending, embedded, strict=True):
            if isinstance(outcome, LookalikeError):
                results[i] = self._failed(p.item_id, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                ready.append((i, p, outcome))
        if ready:
            try:
                written = await self._upsert([p for _, p, _ in ready], np.stack([v for _, _, v in ready]))
            except LookalikeError as exc:
                for i, p, _ in ready:
                    results[i] = self._failed(p.item_id, exc)
            else:
                for (i, _, _), result in zip(ready, written, strict=True):
                    results[i] = BatchItemResult(result.item_id, 201 if result.created else 200)
        return [r for r in results if r is not None]

    @staticmethod
    def _failed(item_id: str | None, error: LookalikeError) -> BatchItemResult:
        return BatchItemResult(item_id, status_of(error), error)

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

    async def _index_all(self, pending: list[_Pending]) -> list[WriteResult]:
        vectors = [await self._admitted_embed(p) for p in pending]
        return await self._upsert(pending, np.stack(vectors))

    async def _upsert(self, pending: list[_Pending], vectors: np.ndarray) -> list[WriteResult]:
        now = time.time()
        payloads = [self._payload(p, now) for p in pending]
        created = await self._store("upsert", self.store.upsert, payloads, vectors)
        metrics.items_indexed.inc(len(pending))
        return [WriteResult(p.item_id, self.model_version, c) for p, c in zip(pending, created, strict=True)]

    def _payload(self, pending: _Pending, now: float) -> dict[str, Any]:
        fields = {k: v for k, v in pending.metadata.items() if v is not None}
        return {"item_id": pending.item_id, **fields, "model_version": self.model_version, "indexed_at": now}

    async def patch(self, item_id: str, patch: ItemPatch) -> dict[str, Any]:
        payload = await self._store("patch", self.store.patch, item_id, patch.changes())
        if payload is None:
            raise ItemNotFound(item_id)
        return payload

    async def delete(self, item_id: str) -> None:
        if not await self._store("delete", self.store.delete, item_id):
            raise ItemNotFound(item_id)

    # ---- reads --------------------------------------------------------------------------------------

    async def get(self, item_id: str) -> dict[str, Any]:
        payload = await self._store("get", self.store.get, item_id)
        if payload is None:
            raise ItemNotFound(item_id)
        return payload

    async def similar(self, item_id: str, query: SimilarQuery) -> dict[str, Any]:
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
        return {
            "item_id": item_id,
            "model_version": self.model_version,
            "results": [
                {"item_id": h.item_id, "score": h.score, **{f: h.payload.get(f) for f in SIMILAR_FIELDS}} for h in hits
            ],
        }

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
            raise StoreUnavailableError("the store reports not ready")

    async def _store(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        started = time.perf_counter()
        try:
            return await self._guard.call(fn, *args)
        except StoreUnavailableError as exc:
            metrics.store_errors.labels(op=op).inc()
            raise StoreUnavailable(f"the vector store is unavailable: {exc}") from None
        except Exception:
            metrics.store_errors.labels(op=op).inc()
            raise
        finally:
            metrics.store_duration.labels(op=op).observe(time.perf_counter() - started)
