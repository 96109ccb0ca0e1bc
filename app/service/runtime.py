"""The composition root: build the encoder, store, batcher and fetcher, start and stop them in order.

Used by the HTTP app's lifespan and by the command line (in-process indexing and queries).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from app.core import metrics
from app.core.settings import Settings
from app.encode.batcher import MicroBatcher
from app.encode.encoder import OnnxImageEncoder
from app.ingest.admission import Budget
from app.ingest.fetch import ImageFetcher
from app.service.items import ItemService
from app.store.base import VectorStore

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


@asynccontextmanager
async def running_service(
    settings: Settings, encoder: OnnxImageEncoder | None = None, store: VectorStore | None = None
) -> AsyncIterator[ItemService]:
    """Encoder (warmed), store, batcher and fetcher, started and stopped in order. Used by the app and the CLI."""
    enc = encoder or OnnxImageEncoder(settings.model_path, settings.device, settings.ort_threads)
    enc.warmup()
    metrics.model_info.labels(version=enc.model_version, provider=enc.provider, precision=enc.precision).set(1)
    vector_store = store or make_store(settings)
    try:
        vector_store.open({enc.model_version: enc.dim})
        max_batch_size, max_wait_ms = settings.batching(enc.provider)  # "auto" = per device
        batcher = MicroBatcher(
            enc.embed,
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
        images = Budget("images", settings.admitted_images(max_batch_size))
        await batcher.start()
        log.info(
            "ready: model %s on %s (batches of up to %d, %g ms wait), %d items",
            enc.model_version,
            enc.provider,
            max_batch_size,
            max_wait_ms,
            vector_store.count(),
        )
        service = ItemService(settings, enc, vector_store, batcher, fetcher, images)
        try:
            yield service
        finally:
            await batcher.stop()
            await fetcher.aclose()
            await asyncio.to_thread(service.close)  # store calls in progress finish before the store closes
    finally:
        if store is None:  # a store passed in belongs to the caller
            vector_store.close()
        log.info("stopped cleanly")
