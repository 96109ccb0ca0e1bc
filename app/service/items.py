"""The service: what each route does, with no HTTP in it (the CLI uses it in-process too).

write: image bytes (upload, base64 or URL) -> decode once, resize per model (thread) -> one micro-batcher per
       active model version -> kept bytes (ImageStore) -> store.upsert(payloads, {version: vectors})
read:  store.similar(item_id, k, filters, version), version = the serving one unless the request names another
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
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
    ModelServing,
    NotReady,
    Overloaded,
    StoreUnavailable,
    ValidationFailed,
    VersionMissing,
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
    ModelsOut,
    ModelVersionOut,
    PromoteOut,
    RetireOut,
    SimilarImageFields,
    SimilarImageResponse,
    SimilarItem,
    SimilarQuery,
    SimilarResponse,
)
from app.core.settings import Settings
from app.encode.batcher import MicroBatcher
from app.encode.models import ModelSet
from app.ingest.admission import Budget
from app.ingest.decode import load_pixels_for, sniff_format
from app.ingest.fetch import ImageFetcher
from app.store.base import Hit, ModelVersion, SimilarFilters, VectorStore, VersionsChanged
from app.store.guard import StoreGuard
from app.store.images import ImageStore, image_key

T = TypeVar("T")


# Another replica's promote or retire reaches this one's cached version list within this long.
VERSIONS_TTL_S = 2.0


@dataclass(frozen=True)
class _Pending:
    item_id: str
    metadata: dict[str, Any]
    image: bytes | str  # raw bytes, or an image URL still to fetch


@dataclass(frozen=True)
class _Embedded:
    data: bytes  # the image bytes (kept in the ImageStore when the item was not written from a URL)
    vectors: dict[str, np.ndarray]  # one per active model version


@dataclass(frozen=True)
class Versions:
    """The collection's model versions at one moment: a request reads this once, so it never mixes versions."""

    serving: str
    all: dict[str, ModelVersion]

    @classmethod
    def of(cls, versions: list[ModelVersion]) -> Versions:
        serving = next(v.model_version for v in versions if v.state == "serving")
        return cls(serving, {v.model_version: v for v in versions})

    @property
    def active(self) -> list[str]:
        """Serving first, then the candidates: every write embeds with each."""
        return [self.serving] + [v for v, mv in self.all.items() if mv.state == "candidate"]

    def check_active(self, version: str | None) -> str:
        """The version a read ranks with: the serving one unless named; 404 model_not_found if not active."""
        if version is None:
            return self.serving
        state = self.all[version].state if version in self.all else None
        if state is None or state == "retired":
            known = ", ".join(self.active)
            why = "is retired" if state == "retired" else "is unknown"
            raise ModelNotFound(f"model version {version!r} {why}; active versions: {known}")
        return version


class ItemService:
    """Answers with the response models of app/core/schemas.py; errors are LookalikeError subclasses."""

    def __init__(
        self,
        settings: Settings,
        models: ModelSet,
        store: VectorStore,
        versions: list[ModelVersion],
        fetcher: ImageFetcher,
        images: Budget,
        image_store: ImageStore,
    ) -> None:
        self.settings = settings
        self.models = models
        self.store = store
        self.fetcher = fetcher
        self.images = images  # admission: one permit per image (whatever the number of models) to its vectors
        self.image_store = image_store
        self._versions = Versions.of(versions)
        self._versions_read = time.monotonic()
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
        """The serving version (as last read)."""
        return self._versions.serving

    @property
    def batcher(self) -> MicroBatcher:
        """The serving version's micro-batcher."""
        return self.models.batchers[self._versions.serving]

    async def versions(self, fresh: bool = False) -> Versions:
        """The collection's versions, re-read from the store when older than VERSIONS_TTL_S (or `fresh`)."""
        if fresh or time.monotonic() - self._versions_read > VERSIONS_TTL_S:
            read = await self.store_call("versions", self.store.versions)
            self._versions, self._versions_read = Versions.of(read), time.monotonic()
        return self._versions

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
        try:
            active = (await self.versions()).active
        except LookalikeError as exc:  # the store is down: each item answers it, like a failed upsert below
            for i, p in pending:
                results[i] = BatchResult.failed(p.item_id, exc)
            return [r for r in results if r is not None]
        # Admission item by item: the tasks start in item order and each takes its permit (or its 429)
        # before its first await, so the first items get the free permits and the rest are refused.
        embedded = await asyncio.gather(*(self._admitted_embed(p, active) for _, p in pending), return_exceptions=True)
        ready: list[tuple[int, _Pending, _Embedded]] = []
        for (i, p), outcome in zip(pending, embedded, strict=True):
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

    async def _admitted_embed(self, pending: _Pending, versions: list[str]) -> _Embedded:
        """_embed under one image permit: 429 at once when none is free; given back however it ends."""
        with self.images.hold():
            return await self._embed(pending, versions)

    async def _embed(self, pending: _Pending, versions: list[str]) -> _Embedded:
        """Download, decode and encode one image (the caller holds its permit)."""
        # Shed before the costly part: a full queue answers 429 before any download or decode.
        for version in versions:
            batcher = self.models.batchers[version]
            if batcher.saturated():
                raise Overloaded(f"the {version} encoder queue is full ({batcher.queue_max} images); retry shortly")
        data = pending.image
        if isinstance(data, str):
            data = await self.fetcher.fetch(data)
        if len(data) > self.settings.fetch_max_bytes:
            raise ImageTooLarge(f"the image is over the limit of {self.settings.fetch_max_bytes} bytes")
        # From here the image reaches the encoders within one decode: announce it to each version's batcher, so
        # that a batch opening meanwhile waits for it (a failed decode or a cancelled request withdraws it).
        encoders = [self._encoder(v) for v in versions]
        inputs = [(e.meta.image_size, e.meta.resample) for e in encoders]
        with contextlib.ExitStack() as stack:
            slots = [stack.enter_context(self.models.batchers[v].reserve()) for v in versions]
            async with self._decode_slots:
                pixels = await asyncio.to_thread(
                    load_pixels_for, data, inputs, self.settings.image_max_pixels, self.settings.decode_draft
                )
            timeout = self.settings.request_timeout_s
            vectors = await asyncio.gather(
                *(slot.submit(pixels[key], timeout) for slot, key in zip(slots, inputs, strict=True))
            )
        return _Embedded(data, dict(zip(versions, vectors, strict=True)))

    async def embed_versions(self, image: bytes | str, versions: list[str]) -> dict[str, np.ndarray]:
        """Fetch (a URL) or take the bytes, decode once and embed with each of `versions`, nothing stored.

        No admission permit: a caller that is not a request (a backfill) paces itself; the batchers' queues
        still bound it (429 overloaded when full).
        """
        return (await self._embed(_Pending("", {}, image), versions)).vectors

    def _encoder(self, version: str) -> Any:
        encoder = self.models.get(version)
        if encoder is None:  # another replica added a version this one has no file for
            raise NotReady(f"model version {version!r} is active but no file of it is loaded here")
        return encoder

    async def _index_all(self, pending: list[_Pending]) -> list[ItemWriteOut]:
        active = (await self.versions()).active
        embedded = [await self._admitted_embed(p, active) for p in pending]
        return await self._upsert(pending, embedded)

    async def _upsert(self, pending: list[_Pending], embedded: list[_Embedded]) -> list[ItemWriteOut]:
        """Keep the uploaded bytes, write payloads + every version's vectors, then drop the replaced images."""
        now = time.time()
        payloads = [self._payload(p, now) for p in pending]
        kept = [(p["image_key"], e.data) for p, e in zip(payloads, embedded, strict=True) if "image_key" in p]
        # The bytes are durable before the store names them. A store write that fails (or times out, and may
        # still land) leaves them as an orphan file rather than risking a payload naming a deleted file.
        await asyncio.to_thread(self._put_images, kept)
        replaced = await self.store_call("get", self._image_keys, [p.item_id for p in pending])
        vectors = {v: np.stack([e.vectors[v] for e in embedded]) for v in embedded[0].vectors}
        try:
            created = await self.store_call("upsert", self.store.upsert, payloads, vectors)
        except VersionsChanged:  # the active versions changed since this write read them (another replica retired one)
            active = (await self.versions(fresh=True)).active
            if not set(active) <= set(vectors):
                raise NotReady(
                    f"model version(s) {sorted(set(active) - set(vectors))} became active and no file of them is "
                    "loaded here; restart this replica with every active model file in LOOKALIKE_MODEL_PATH"
                ) from None
            subset = {v: vectors[v] for v in active}
            created = await self.store_call("upsert", self.store.upsert, payloads, subset)
        await asyncio.to_thread(self._drop_images, [key for key in replaced if key is not None])
        metrics.items_indexed.inc(len(pending))
        serving = self.model_version
        return [
            ItemWriteOut(item_id=p.item_id, model_version=serving, created=c)
            for p, c in zip(pending, created, strict=True)
        ]

    def _payload(self, pending: _Pending, now: float) -> dict[str, Any]:
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
            "model_version": self.model_version,
            "indexed_at": now,
        }

    def _image_keys(self, item_ids: list[str]) -> list[str | None]:
        """The kept-image keys of the items as they are now (read before a write replaces them): one store read."""
        keys = [(payload or {}).get("image_key") for payload in self.store.get_many(item_ids)]
        return [key if isinstance(key, str) else None for key in keys]

    def _put_images(self, kept: list[tuple[str, bytes]]) -> None:
        try:
            for key, data in kept:
                self.image_store.put(key, data)
        except OSError as exc:  # a full disk or a read-only folder: nothing was stored, retry elsewhere or later
            metrics.store_errors.labels(op="image_put").inc()
            raise StoreUnavailable(
                f"the image store ({self.image_store.root}) cannot keep the image: {exc.strerror or exc}"
            ) from None

    def _drop_images(self, keys: list[str]) -> None:
        for key in keys:
            self.image_store.delete(key)

    async def patch(self, item_id: str, patch: ItemPatch) -> ItemOut:
        payload = await self.store_call("patch", self.store.patch, item_id, patch.changes())
        if payload is None:
            raise ItemNotFound(item_id)
        return ItemOut.model_validate(payload)

    async def delete(self, item_id: str) -> None:
        (key,) = await self.store_call("get", self._image_keys, [item_id])
        if not await self.store_call("delete", self.store.delete, item_id):
            raise ItemNotFound(item_id)
        if key is not None:  # after the store write: a crash in between leaves an orphan file, never a lost image
            await asyncio.to_thread(self.image_store.delete, key)

    # ---- reads --------------------------------------------------------------------------------------

    async def get(self, item_id: str) -> ItemOut:
        payload = await self.store_call("get", self.store.get, item_id)
        if payload is None:
            raise ItemNotFound(item_id)
        return ItemOut.model_validate(payload)

    async def similar(self, item_id: str, query: SimilarQuery) -> SimilarResponse:
        version = (await self.versions()).check_active(query.model_version)
        hits: list[Hit] | None = await self.store_call(
            "similar", self.store.similar, item_id, query.k, _filters(query), version
        )
        if hits is None:
            raise ItemNotFound(item_id)
        return SimilarResponse(item_id=item_id, model_version=version, results=_similar_items(hits))

    # ---- search by photo, browsing, the page ---------------------------------------------------------

    async def similar_to_image(self, image: bytes | str, query: SimilarImageFields) -> SimilarImageResponse:
        """Top-k look-alikes of a photo (bytes, or a URL to fetch) that is embedded and never stored.

        The photo takes the write path's way to the encoder (`_embed`: admission, fetch guard, decode
        limits, micro-batching), so it is refused (429, 413, 415, 422...) exactly as a POST /items would be.
        """
        version = (await self.versions()).check_active(query.model_version)
        if self.models.get(version) is None:
            raise ModelNotFound(f"model version {version!r} has no model file loaded here to embed the photo")
        vector = (await self._admitted_embed(_Pending("", {}, image), [version])).vectors[version]
        filters = _filters(query, seller_id=query.seller_id)
        hits: list[Hit] = await self.store_call(
            "similar_to_vector", self.store.similar_to_vector, vector, query.k, filters, version
        )
        return SimilarImageResponse(model_version=version, results=_similar_items(hits))

    def decode_base64_image(self, text: str) -> bytes:
        return self._decode_base64(text)

    async def list_items(self, query: ItemListQuery) -> ItemPageOut:
        start = None if query.cursor is None else _cursor_point(query.cursor)
        page = await self.store_call(
            "list_items", self.store.list_items, query.limit, start, query.category, query.status
        )
        return ItemPageOut(
            items=[ItemOut.model_validate(item) for item in page.items],
            next_cursor=None if page.next_point is None else _point_cursor(page.next_point),
        )

    async def image(self, item_id: str) -> KeptImage | str:
        """The item's photo: its kept bytes, or the URL it was written from."""
        payload = await self.store_call("get", self.store.get, item_id)
        if payload is None:
            raise ItemNotFound(item_id)
        key, url = payload.get("image_key"), payload.get("image_url")
        if isinstance(key, str):
            data = await asyncio.to_thread(self.image_store.get, key)
            if data is not None:
                fmt = sniff_format(data) or "octet-stream"
                etag = str(payload.get("write_id") or key.rpartition("-")[2])
                return KeptImage(data, IMAGE_TYPES.get(fmt, "application/octet-stream"), etag)
        if isinstance(url, str):
            return url
        raise ImageNotFound(f"no image is kept for item {item_id!r}")

    # ---- model versions ---------------------------------------------------------------------------

    async def list_models(self) -> ModelsOut:
        versions = await self.versions(fresh=True)
        rows = []
        for version, mv in versions.all.items():
            if mv.state == "retired":  # its vectors are gone: every item misses them
                have, total = 0, await self.store_call("count", self.store.count)
            else:
                have, total = await self.store_call("coverage", self.store.coverage, version)
            encoder = self.models.get(version)
            rows.append(
                ModelVersionOut(
                    model_version=version,
                    state=mv.state,
                    coverage=_fraction(have, total) if mv.state != "retired" else 0.0,
                    items_missing=total - have,
                    dim=mv.dim,
                    image_size=encoder.image_size if encoder else None,
                    precision=encoder.precision if encoder else None,
                    provider=encoder.provider if encoder else None,
                )
            )
        return ModelsOut(serving=versions.serving, versions=rows)

    async def promote(self, version: str, force: bool = False) -> PromoteOut:
        """Make `version` serve /similar; 409 model_not_ready while items lack its vector, unless forced."""
        versions = await self.versions(fresh=True)
        version = versions.check_active(version)
        if self.models.get(version) is None:
            raise ModelNotFound(f"model version {version!r} has no model file loaded here (LOOKALIKE_MODEL_PATH)")
        have, total = await self.store_call("coverage", self.store.coverage, version)
        if have < total and not force:
            raise VersionMissing(
                f"model version {version!r} covers {have} of {total} items ({_fraction(have, total):.1%}); "
                f"backfill it first (`lookalike models backfill {version}`), or promote with force=true "
                f"and {total - have} item(s) drop out of /similar results until they have its vector"
            )
        if version != versions.serving:
            await self.store_call("promote", self.store.promote, version)
        await self.versions(fresh=True)
        return PromoteOut(
            serving=version, previous=versions.serving, coverage=_fraction(have, total), items_missing=total - have
        )

    async def retire(self, version: str) -> RetireOut:
        """Drop a non-serving version's vectors (its space is freed); 409 model_serving for the serving one."""
        versions = await self.versions(fresh=True)
        version = versions.check_active(version)
        if version == versions.serving:
            raise ModelServing(f"model version {version!r} serves /similar; promote another version first")
        await self.store_call("retire", self.store.retire, version)
        await self.versions(fresh=True)
        return RetireOut(model_version=version, state="retired")

    def info(self) -> InfoOut:
        # models.export names random-weight models "siglip-<config>-random-<precision>-<sha>"
        return InfoOut(model_version=self.model_version, random_weights="-random-" in self.model_version)

    async def ready(self) -> bool:
        if self.models.saturated():
            return False
        try:
            await self.store_call("ready", self._store_ready)
        except StoreUnavailable:
            return False
        return True

    def _store_ready(self) -> None:
        # A store that says "not ready" counts as a failure, so the breaker stays open until it is.
        if not self.store.ready():
            raise StoreUnavailable("the vector store reports not ready")

    async def store_call(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        """Run one store call through the guard (bounded wait, circuit breaker) and count it in the metrics."""
        started = time.perf_counter()
        try:
            return await self._guard.call(fn, *args)
        except Exception:
            metrics.store_errors.labels(op=op).inc()
            raise
        finally:
            metrics.store_duration.labels(op=op).observe(time.perf_counter() - started)


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


def _fraction(have: int, total: int) -> float:
    return 1.0 if total == 0 else have / total


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
