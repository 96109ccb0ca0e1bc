"""The composition root: build the models, store, batchers and fetcher, start and stop them in order.

Used by the HTTP app's lifespan and by the command line (in-process indexing and queries).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from app.core.settings import Settings
from app.encode.encoder import OnnxImageEncoder
from app.encode.models import BatchLimits, ModelSet
from app.ingest.admission import Budget
from app.ingest.fetch import ImageFetcher
from app.service.items import ItemService
from app.store.base import VectorStore
from app.store.images import ImageStore

log = logging.getLogger("lookalike")


def make_store(settings: Settings) -> VectorStore:
    if settings.qdrant_url:
        from app.store.qdrant_server import ServerStore

        return ServerStore.from_settings(settings)
    from app.store.qdrant_edge import EdgeStore

    return EdgeStore(
        settings.qdrant_path,
        settings.collection,
        hot_max=settings.edge_hot_max,
        merge_fanin=settings.edge_merge_fanin,
        max_shard_points=settings.edge_max_shard_points,
        # close() waits this long for searches in progress (part of Settings.shutdown_budget_s())
        close_wait_s=settings.store_close_wait_s,
    )


def load_models(settings: Settings) -> ModelSet:
    """Every file of LOOKALIKE_MODEL_PATH; EncoderError for a bad file or two files of one version."""
    return ModelSet.load(settings.model_path, settings.device, settings.ort_threads)


def as_model_set(models: ModelSet | OnnxImageEncoder | Sequence[OnnxImageEncoder]) -> ModelSet:
    """A set from what a caller passed: a set, a list of encoders, or one encoder (or a stand-in for one)."""
    if isinstance(models, ModelSet):
        return models
    return ModelSet(list(models) if isinstance(models, list | tuple) else [models])  # type: ignore[list-item]


@asynccontextmanager
async def running_service(
    settings: Settings,
    encoder: ModelSet | OnnxImageEncoder | Sequence[OnnxImageEncoder] | None = None,
    store: VectorStore | None = None,
) -> AsyncIterator[ItemService]:
    """Models (warmed), store, batchers and fetcher, started and stopped in order. Used by the app and the CLI.

    `encoder`: the loaded model(s) (tests and `python -m app` pass theirs), else LOOKALIKE_MODEL_PATH is loaded.
    """
    models = as_model_set(encoder) if encoder is not None else load_models(settings)
    models.warmup()
    vector_store = store or make_store(settings)
    try:
        versions = vector_store.open(models.dims())
        limits = {}
        for version, enc in models.encoders.items():
            max_batch_size, max_wait_ms = settings.batching(enc.provider)  # "auto" = per device
            limits[version] = BatchLimits(
                max_batch_size=max_batch_size,
                max_wait_ms=max_wait_ms,
                queue_max=settings.queue_max,
                max_hold_ms=settings.batch_max_hold_ms,
                drain_s=settings.shutdown_encoder_drain_s,
            )
        fetcher = ImageFetcher(
            timeout_s=settings.fetch_timeout_s,
            max_bytes=settings.fetch_max_bytes,
            allow_private=settings.fetch_allow_private,
            max_connections=settings.fetch_max_connections,
            max_keepalive=settings.fetch_max_keepalive,
            keepalive_expiry_s=settings.fetch_keepalive_expiry_s,
        )
        images = Budget("images", settings.admitted_images(max(lim.max_batch_size for lim in limits.values())))
        await models.start(limits)
        service = ItemService(
            settings, models, vector_store, versions, fetcher, images, ImageStore(settings.image_store_dir())
        )
        serving = models.encoders.get(service.model_version)
        log.info(
            "ready: serving model %s on %s, versions %s, %d items",
            service.model_version,
            serving.provider if serving else "?",
            ", ".join(f"{v.model_version} ({v.state})" for v in versions),
            vector_store.count(),
        )
        try:
            yield service
        finally:
            await models.stop()
            await fetcher.aclose()
            await asyncio.to_thread(service.close)  # store calls in progress finish before the store closes
    finally:
        if store is None:  # a store passed in belongs to the caller
            vector_store.close()
        log.info("stopped cleanly")
