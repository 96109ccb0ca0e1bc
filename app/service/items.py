"""ItemService: what each item and model route does, with no HTTP in it (the CLI uses it in-process too).

A facade over its parts, each in its own module:
- writes (app/service/writes.py): index, patch, delete;
- reads (app/service/reads.py): get, look-alikes of an item or a photo, pages of items, an item's photo;
- model administration (app/service/model_admin.py): list, promote, retire model versions;
- shared by them: the guarded store calls and cached versions (store_access.py), the way from an image to its
  vectors (embedding.py).
Answers are the response models of app/core/schemas.py; errors are LookalikeError subclasses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

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
    PromoteOut,
    RetireOut,
    SimilarImageFields,
    SimilarImageResponse,
    SimilarQuery,
    SimilarResponse,
)
from app.core.settings import Settings
from app.encode.batcher import MicroBatcher
from app.encode.model_set import ModelSet
from app.ingest.fetch import ImageFetcher
from app.service.admission import Budget
from app.service.embedding import Embedder, Pending
from app.service.model_admin import ModelAdmin
from app.service.reads import ItemReads, KeptImage, ReadTraffic
from app.service.store_access import StoreAccess, Versions
from app.service.writes import ItemWrites
from app.store.base import ModelVersion, VectorStore
from app.store.images import ImageStore

T = TypeVar("T")

__all__ = ["ItemService", "KeptImage"]


class ItemService:
    def __init__(
        self,
        settings: Settings,
        models: ModelSet,
        store: VectorStore,
        versions: list[ModelVersion],
        fetcher: ImageFetcher,
        image_permits: Budget,
        image_store: ImageStore,
        read_traffic: ReadTraffic | None = None,
    ) -> None:
        self.settings = settings
        self.models = models
        self.store = store
        self.fetcher = fetcher
        self.image_permits = image_permits  # admission: one permit per image (whatever the number of models)
        self.image_store = image_store
        self._access = StoreAccess(settings, store, versions)
        self._embedder = Embedder(settings, models, fetcher, image_permits)
        self.writes = ItemWrites(self._access, self._embedder, image_store)
        self.reads = ItemReads(self._access, self._embedder, image_store, read_traffic)
        self.read_traffic = self.reads.traffic  # look-alike reads in progress: a backfill yields to them
        self.admin = ModelAdmin(self._access, models)

    def close(self) -> None:
        """Stop the store-call pool after the calls in progress (before the store itself is closed)."""
        self._access.close()

    @property
    def model_version(self) -> str:
        """The serving version (as last read)."""
        return self._access.serving

    @property
    def batcher(self) -> MicroBatcher:
        """The serving version's micro-batcher."""
        return self.models.batchers[self._access.serving]

    async def versions(self, fresh: bool = False) -> Versions:
        return await self._access.versions(fresh)

    async def store_call(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        return await self._access.call(op, fn, *args)

    # ---- writes (writes.py) ----

    async def index_item(self, item: ItemIn) -> ItemWriteOut:
        return await self.writes.index_item(item)

    async def index_upload(self, item_id: str, metadata: dict[str, Any], photos: list[bytes]) -> ItemWriteOut:
        return await self.writes.index_upload(item_id, metadata, photos)

    async def index_items(self, raw_items: list[dict[str, Any]]) -> list[BatchResult]:
        return await self.writes.index_items(raw_items)

    async def import_items(self, version: str, raw_items: list[Any]) -> list[BatchResult]:
        return await self.writes.import_items(version, raw_items)

    async def patch(self, item_id: str, patch: ItemPatch) -> ItemOut:
        return await self.writes.patch(item_id, patch)

    async def delete(self, item_id: str) -> None:
        await self.writes.delete(item_id)

    async def embed_versions(self, image: bytes | str, versions: list[str]) -> dict[str, np.ndarray]:
        """Embed one image with each of `versions`, nothing stored and no admission permit (a backfill paces
        itself; the batchers' queues still bound it)."""
        return (await self._embedder.embed(Pending("", {}, image), versions)).vectors

    def decode_base64_image(self, text: str) -> bytes:
        return self._embedder.decode_base64(text)

    # ---- reads (reads.py) ----

    async def get(self, item_id: str) -> ItemOut:
        return await self.reads.get(item_id)

    async def similar(self, item_id: str, query: SimilarQuery) -> SimilarResponse:
        return await self.reads.similar(item_id, query)

    async def similar_to_image(self, image: bytes | str, query: SimilarImageFields) -> SimilarImageResponse:
        return await self.reads.similar_to_image(image, query)

    async def list_items(self, query: ItemListQuery) -> ItemPageOut:
        return await self.reads.list_items(query)

    async def image(self, item_id: str, n: int = 0) -> KeptImage | str:
        return await self.reads.image(item_id, n)

    # ---- model versions (model_admin.py) ----

    async def list_models(self) -> ModelsOut:
        return await self.admin.list_models()

    async def promote(self, version: str, force: bool = False) -> PromoteOut:
        return await self.admin.promote(version, force)

    async def retire(self, version: str) -> RetireOut:
        return await self.admin.retire(version)

    # ---- health ----

    def info(self) -> InfoOut:
        # models.export names random-weight models "siglip-<config>-random-<precision>-<sha>"
        return InfoOut(model_version=self.model_version, random_weights="-random-" in self.model_version)

    async def ready(self) -> bool:
        return not self.models.saturated() and await self._access.ready()
