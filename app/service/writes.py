"""Writes: index (one item, an upload, a batch), patch and delete, with the item's kept image.

image bytes (upload, base64 or URL) -> decode once, resize per model (thread) -> one micro-batcher per active
model version -> kept bytes (ImageStore) -> store.upsert(payloads, {version: vectors})
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import numpy as np
import pydantic

from app.core import metrics
from app.core.errors import (
    ItemNotFound,
    LookalikeError,
    NotReady,
    StoreUnavailable,
    ValidationError,
    validation_message,
)
from app.core.schemas import BatchResult, ItemIn, ItemOut, ItemPatch, ItemWriteOut
from app.service.embedding import Embedded, Embedder, Pending
from app.service.store_access import StoreAccess
from app.store.base import VersionsChanged
from app.store.images import ImageStore, image_key


class ItemWrites:
    def __init__(self, access: StoreAccess, embedder: Embedder, image_store: ImageStore) -> None:
        self._access = access
        self._embedder = embedder
        self._image_store = image_store

    async def index_item(self, item: ItemIn) -> ItemWriteOut:
        return (await self._index_all([self._pending(item)]))[0]

    async def index_upload(self, item_id: str, metadata: dict[str, Any], data: bytes) -> ItemWriteOut:
        return (await self._index_all([Pending(item_id, metadata, data)]))[0]

    async def index_items(self, raw_items: list[dict[str, Any]]) -> list[BatchResult]:
        """Validate, embed and store each item independently; one bad item never fails the others."""
        results: list[BatchResult | None] = [None] * len(raw_items)
        pending = self._validate_batch(raw_items, results)
        try:
            active = (await self._access.versions()).active
        except LookalikeError as exc:  # the store is down: each item answers it, like a failed upsert below
            for i, p in pending:
                results[i] = BatchResult.failed(p.item_id, exc)
            return [r for r in results if r is not None]
        # Admission item by item: the tasks start in item order and each takes its permit (or its 429)
        # before its first await, so the first items get the free permits and the rest are refused.
        outcomes = await asyncio.gather(
            *(self._embedder.admitted(p, active) for _, p in pending), return_exceptions=True
        )
        ready: list[tuple[int, Pending, Embedded]] = []
        for (i, p), outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, LookalikeError):
                results[i] = BatchResult.failed(p.item_id, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                ready.append((i, p, outcome))
        if ready:
            try:
                written = await self._upsert([p for _, p, _ in ready], [e for _, _, e in ready])
            except LookalikeError as exc:
                for i, p, _ in ready:
                    results[i] = BatchResult.failed(p.item_id, exc)
            else:
                for (i, _, _), result in zip(ready, written, strict=True):
                    results[i] = BatchResult(item_id=result.item_id, status=201 if result.created else 200)
        return [r for r in results if r is not None]

    def _validate_batch(
        self, raw_items: list[dict[str, Any]], results: list[BatchResult | None]
    ) -> list[tuple[int, Pending]]:
        """The valid items (with their index); each invalid one gets its failed result in `results`."""
        pending: list[tuple[int, Pending]] = []
        seen: set[str] = set()
        for i, raw in enumerate(raw_items):
            given_id = raw.get("item_id") if isinstance(raw, dict) else None
            given_id = given_id if isinstance(given_id, str) else None
            try:
                item = ItemIn.model_validate(raw)
                if item.item_id in seen:
                    raise ValidationError(f"item_id {item.item_id!r} appears more than once in this batch")
                seen.add(item.item_id)
                pending.append((i, self._pending(item)))
            except pydantic.ValidationError as exc:
                results[i] = BatchResult.failed(given_id, ValidationError(validation_message(exc.errors())))
            except LookalikeError as exc:
                results[i] = BatchResult.failed(given_id, exc)
        return pending

    def _pending(self, item: ItemIn) -> Pending:
        if item.image_url is not None:
            return Pending(item.item_id, item.metadata(), item.image_url)
        return Pending(item.item_id, item.metadata(), self._embedder.decode_base64(item.image_base64 or ""))

    async def _index_all(self, pending: list[Pending]) -> list[ItemWriteOut]:
        active = (await self._access.versions()).active
        embedded = [await self._embedder.admitted(p, active) for p in pending]
        return await self._upsert(pending, embedded)

    async def _upsert(self, pending: list[Pending], embedded: list[Embedded]) -> list[ItemWriteOut]:
        """Keep the uploaded bytes, write payloads + every version's vectors, then drop the replaced images."""
        now = time.time()
        payloads = [self._payload(p, now) for p in pending]
        kept = [(p["image_key"], e.data) for p, e in zip(payloads, embedded, strict=True) if "image_key" in p]
        # The bytes are durable before the store names them. A store write that fails (or times out, and may
        # still land) leaves them as an orphan file rather than risking a payload naming a deleted file.
        await asyncio.to_thread(self._put_images, kept)
        replaced = await self._access.call("get", self.image_keys, [p.item_id for p in pending])
        vectors = {v: np.stack([e.vectors[v] for e in embedded]) for v in embedded[0].vectors}
        created = await self._write(payloads, vectors)
        await asyncio.to_thread(self._drop_images, [key for key in replaced if key is not None])
        metrics.items_indexed.inc(len(pending))
        serving = self._access.serving
        return [
            ItemWriteOut(item_id=p.item_id, model_version=serving, created=c)
            for p, c in zip(pending, created, strict=True)
        ]

    async def _write(self, payloads: list[dict[str, Any]], vectors: dict[str, np.ndarray]) -> list[bool]:
        store = self._access.store
        try:
            return await self._access.call("upsert", store.upsert, payloads, vectors)
        except VersionsChanged:  # the active versions changed since this write read them (another replica retired one)
            active = (await self._access.versions(fresh=True)).active
            if not set(active) <= set(vectors):
                raise NotReady(
                    f"model version(s) {sorted(set(active) - set(vectors))} became active and no file of them is "
                    "loaded here; restart this replica with every active model file in LOOKALIKE_MODEL_PATH"
                ) from None
            subset = {v: vectors[v] for v in active}
            return await self._access.call("upsert", store.upsert, payloads, subset)

    def _payload(self, pending: Pending, now: float) -> dict[str, Any]:
        fields = {k: v for k, v in pending.metadata.items() if v is not None}
        write_id = uuid.uuid4().hex  # new on every image write; patches keep it (backfills check it)
        if isinstance(pending.image, str):  # written from a URL: keep it (GET /items/{id}/image redirects to it)
            fields["image_url"] = pending.image
        else:  # written from bytes: kept in the ImageStore under this key
            fields["image_key"] = image_key(pending.item_id, write_id)
        return {
            "item_id": pending.item_id,
            **fields,
            "write_id": write_id,
            "model_version": self._access.serving,
            "indexed_at": now,
        }

    def image_keys(self, item_ids: list[str]) -> list[str | None]:
        """The kept-image keys of the items as they are now (read before a write replaces them): one store read."""
        keys = [(payload or {}).get("image_key") for payload in self._access.store.get_many(item_ids)]
        return [key if isinstance(key, str) else None for key in keys]

    def _put_images(self, kept: list[tuple[str, bytes]]) -> None:
        try:
            for key, data in kept:
                self._image_store.put(key, data)
        except OSError as exc:  # a full disk or a read-only folder: nothing was stored, retry elsewhere or later
            metrics.store_errors.labels(op="image_put").inc()
            raise StoreUnavailable(
                f"the image store ({self._image_store.root}) cannot keep the image: {exc.strerror or exc}"
            ) from None

    def _drop_images(self, keys: list[str]) -> None:
        for key in keys:
            self._image_store.delete(key)

    async def patch(self, item_id: str, patch: ItemPatch) -> ItemOut:
        payload = await self._access.call("patch", self._access.store.patch, item_id, patch.changes())
        if payload is None:
            raise ItemNotFound(item_id)
        return ItemOut.model_validate(payload)

    async def delete(self, item_id: str) -> None:
        (key,) = await self._access.call("get", self.image_keys, [item_id])
        if not await self._access.call("delete", self._access.store.delete, item_id):
            raise ItemNotFound(item_id)
        if key is not None:  # after the store write: a crash in between leaves an orphan file, never a lost image
            await asyncio.to_thread(self._image_store.delete, key)
