"""Writes: index (one listing, an upload, a batch), patch and delete, with the listing's kept photos.

each photo's bytes (upload, base64 or URL) -> decode once, resize per model (thread) -> one micro-batcher per
active model version -> kept bytes (ImageStore) -> boilerplate marks (boilerplate.py) -> store.upsert(payloads,
{version: [photos, dim] per listing}): a listing is written whole (one point) or not at all.
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
    ModelNotFound,
    NotReady,
    StoreUnavailable,
    ValidationError,
    validation_message,
)
from app.core.schemas import BatchResult, ItemIn, ItemOut, ItemPatch, ItemWriteOut
from app.service.boilerplate import Boilerplate
from app.service.embedding import EmbeddedListing, Embedder, Listing
from app.service.import_rows import RowError, check_row
from app.service.store_access import StoreAccess
from app.store.base import VersionsChanged
from app.store.images import ImageStore, image_key, payload_image_keys


class ItemWrites:
    def __init__(self, access: StoreAccess, embedder: Embedder, image_store: ImageStore) -> None:
        self._access = access
        self._embedder = embedder
        self._image_store = image_store
        self._boilerplate = Boilerplate(access, embedder.settings)

    async def index_item(self, item: ItemIn) -> ItemWriteOut:
        return (await self._index_all([self._pending(item)]))[0]

    async def index_upload(self, item_id: str, metadata: dict[str, Any], photos: list[bytes]) -> ItemWriteOut:
        """A multipart upload: its `image` files are the listing's photos, in order."""
        listing = Listing(item_id, metadata, list(photos), numbered=len(photos) > 1)
        return (await self._index_all([listing]))[0]

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
            *(self._embedder.admitted_listing(p, active) for _, p in pending), return_exceptions=True
        )
        ready: list[tuple[int, Listing, EmbeddedListing]] = []
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

    async def import_items(self, version: str, raw_items: list[Any]) -> list[BatchResult]:
        """POST /items/import: items with their vectors of `version` (checked like `lookalike import` rows), written
        through the ordinary write path (kept photos, boilerplate marks, upsert) with no image fetched or embedded."""
        active = (await self._access.versions()).active
        if version not in active:
            raise ModelNotFound(f"model version {version!r} is not active here (active: {active})")
        if active != [version]:
            raise ValidationError(
                f"the active model versions are {active}; an import brings {version!r} only and every item needs "
                "each active version's vector: import while it is the only active version"
            )
        dim = self._embedder.encoder(version).dim
        settings = self._embedder.settings
        results: list[BatchResult | None] = [None] * len(raw_items)
        ready: list[tuple[int, Listing, EmbeddedListing]] = []
        seen: set[str] = set()
        for i, raw in enumerate(raw_items):
            given_id = raw.get("item_id") if isinstance(raw, dict) else None
            try:
                row = check_row(i, raw, dim, settings.max_photos, settings.fetch_max_bytes)
                if row.item.item_id in seen:
                    raise RowError(f"item_id {row.item.item_id!r} appears more than once in this batch")
                seen.add(row.item.item_id)
            except RowError as exc:
                failed = ValidationError(str(exc))
                results[i] = BatchResult.failed(given_id if isinstance(given_id, str) else None, failed)
                continue
            listing = row.listing(settings.fetch_max_bytes)
            photos = [p if isinstance(p, bytes) else b"" for p in listing.photos]  # a URL photo keeps no bytes
            ready.append((i, listing, EmbeddedListing(photos, {version: row.vectors})))
        if ready:
            written = await self._upsert([p for _, p, _ in ready], [e for _, _, e in ready])
            for (i, _, _), result in zip(ready, written, strict=True):
                results[i] = BatchResult(item_id=result.item_id, status=201 if result.created else 200)
        return [r for r in results if r is not None]

    def _validate_batch(
        self, raw_items: list[dict[str, Any]], results: list[BatchResult | None]
    ) -> list[tuple[int, Listing]]:
        """The valid items (with their index); each invalid one gets its failed result in `results`."""
        pending: list[tuple[int, Listing]] = []
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

    def _pending(self, item: ItemIn) -> Listing:
        sources: list[bytes | str] = []
        for i, photo in enumerate(item.photos()):
            try:
                sources.append(photo.url if photo.url is not None else self._embedder.decode_base64(photo.base64 or ""))
            except LookalikeError as exc:
                if item.images is not None:
                    exc.at_photo(i)
                raise
        return Listing(item.item_id, item.metadata(), sources, numbered=item.images is not None)

    async def _index_all(self, pending: list[Listing]) -> list[ItemWriteOut]:
        active = (await self._access.versions()).active
        embedded = [await self._embedder.admitted_listing(p, active) for p in pending]
        return await self._upsert(pending, embedded)

    async def _upsert(self, pending: list[Listing], embedded: list[EmbeddedListing]) -> list[ItemWriteOut]:
        """Keep the uploaded bytes, write payloads + every version's vectors, mark the boilerplate photos of
        the listings that share one, then drop the replaced photos' files."""
        now = time.time()
        payloads = [self._payload(p, now) for p in pending]
        kept = [
            (photo["image_key"], data)
            for p, e in zip(payloads, embedded, strict=True)
            for photo, data in zip(p["photos"], e.photos, strict=True)
            if "image_key" in photo
        ]
        # The bytes are durable before the store names them. A store write that fails (or times out, and may
        # still land) leaves them as an orphan file rather than risking a payload naming a deleted file.
        await asyncio.to_thread(self._put_images, kept)
        replaced = await self._access.call("get", self.image_keys, [p.item_id for p in pending])
        serving = self._access.serving
        found = await self._boilerplate.find(payloads, [e.vectors.get(serving) for e in embedded])
        vectors = {v: [e.vectors[v] for e in embedded] for v in embedded[0].vectors}
        created = await self._write(payloads, vectors)
        await self._boilerplate.mark_others(found)
        await asyncio.to_thread(self._drop_images, [key for keys in replaced for key in keys])
        metrics.items_indexed.inc(len(pending))
        serving = self._access.serving
        return [
            ItemWriteOut(item_id=p.item_id, model_version=serving, created=c)
            for p, c in zip(pending, created, strict=True)
        ]

    async def _write(self, payloads: list[dict[str, Any]], vectors: dict[str, list[np.ndarray]]) -> list[bool]:
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

    def _payload(self, pending: Listing, now: float) -> dict[str, Any]:
        return listing_payload(pending, self._access.serving, now)

    def image_keys(self, item_ids: list[str]) -> list[list[str]]:
        """The kept-photo keys of each item as it is now (read before a write replaces it): one store read."""
        return [payload_image_keys(payload or {}) for payload in self._access.store.get_many(item_ids)]

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
        (keys,) = await self._access.call("get", self.image_keys, [item_id])
        if not await self._access.call("delete", self._access.store.delete, item_id):
            raise ItemNotFound(item_id)
        # after the store write: a crash in between leaves orphan files, never a lost photo
        await asyncio.to_thread(self._drop_images, keys)


def listing_payload(pending: Listing, serving: str, now: float) -> dict[str, Any]:
    """The payload a listing is stored with (also what `lookalike import` stores): metadata, photos, write_id."""
    fields = {k: v for k, v in pending.metadata.items() if v is not None}
    write_id = uuid.uuid4().hex  # new on every image write; patches keep it (backfills check it)
    photos: list[dict[str, Any]] = []
    for i, photo in enumerate(pending.photos):
        if isinstance(photo, str):  # written from a URL: keep it (GET /items/{id}/images/{i} redirects to it)
            photos.append({"image_url": photo})
        else:  # written from bytes: kept in the ImageStore under this key (the cover's as before photos)
            photos.append({"image_key": image_key(pending.item_id, write_id if i == 0 else f"{write_id}-{i}")})
    fields.update(photos[0])  # the cover, as listings from before several photos have it
    return {
        "item_id": pending.item_id,
        **fields,
        "photos": photos,
        "write_id": write_id,
        "model_version": serving,
        "indexed_at": now,
    }
