"""The composition root: the one place that builds the service's parts, starts them and closes them in order.

`Runtime(settings).running()` builds everything the routes reach: models (warmed), store, micro-batchers, image
fetcher, the admission budgets, the kept-image store, the experiment service (LOOKALIKE_EXPERIMENTS_FILE applied,
once) and the background backfills. The HTTP app (app/http/app.py) maps routes onto what it yields; `python -m app`
enters it before serving, so a bad model, a mismatched collection or a bad experiments file stops start-up with
one line. The CLI's in-process commands need only the item service: `running_service`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from app.core.settings import Settings
from app.encode.encoder import OnnxImageEncoder
from app.encode.model_set import BatchLimits, ModelSet
from app.experiments.event_log import EventLog
from app.experiments.tokens import AttributionTokens
from app.ingest.fetch import ImageFetcher
from app.service.admission import Budget
from app.service.backfill import Backfills
from app.service.experiments import ExperimentService, apply_experiments_file, events_secret, experiment_registry
from app.service.items import ItemService
from app.service.reads import ReadTraffic
from app.store.base import ModelVersion, VectorStore
from app.store.images import ImageStore

log = logging.getLogger("lookalike")

Models = ModelSet | OnnxImageEncoder | Sequence[OnnxImageEncoder]


@dataclass(frozen=True)
class Services:
    """What the routes reach, all started."""

    items: ItemService
    experiments: ExperimentService
    backfills: Backfills


class Runtime:
    """Built from Settings (and, in tests, models and a store of their own); `running()` starts everything."""

    def __init__(self, settings: Settings, models: Models | None = None, store: VectorStore | None = None) -> None:
        self.settings = settings
        # Admission of request bodies (app/http/middleware.py). Made before the start: the HTTP app's middleware
        # holds it from the app's first call on.
        self.body_budget = Budget("body_bytes", settings.admission_body_bytes)
        self._models = models
        self._store = store

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Services]:
        """Start everything; on exit: backfills stop (their images in flight are dropped, a rerun resumes), the
        event log closes, then the encoders drain, the fetcher and the store close."""
        async with running_service(self.settings, self._models, self._store) as items:
            experiments = await start_experiments(self.settings, items)
            backfills = Backfills(items)
            try:
                yield Services(items, experiments, backfills)
            finally:
                await backfills.stop()
                await asyncio.to_thread(experiments.close)


async def start_experiments(settings: Settings, items: ItemService) -> ExperimentService:
    """The experiment service on top of the item service; applies LOOKALIKE_EXPERIMENTS_FILE (a bad file or a
    refused change raises its LookalikeError)."""
    await asyncio.to_thread(apply_experiments_file, settings, items.store)
    registry = experiment_registry(settings, items.store)
    tokens = AttributionTokens(events_secret(settings), max_age_s=settings.events_max_age_s)
    root = settings.events_root()
    event_log = await asyncio.to_thread(EventLog, root, settings.replica)  # rolls segments a kill left behind
    return ExperimentService(items, registry, tokens, event_log, root)


def make_store(settings: Settings) -> VectorStore:
    if settings.qdrant_url:
        from app.store.qdrant_server import ServerStore

        return ServerStore.from_settings(settings)
    from app.store.qdrant_edge import EdgeStore
    from app.store.qdrant_edge.builder import IndexOptions
    from app.store.qdrant_edge.readers import default_workers

    return EdgeStore(
        settings.qdrant_path,
        settings.collection,
        hot_max=settings.edge_hot_max,
        merge_fanin=settings.edge_merge_fanin,
        max_shard_points=settings.edge_max_shard_points,
        read_workers=settings.edge_read_workers if settings.edge_read_workers is not None else default_workers(),
        # close() waits this long for searches in progress (part of Settings.shutdown_budget_s())
        close_wait_s=settings.store_close_wait_s,
        index=IndexOptions(
            quantization=settings.edge_quantization,
            vectors_on_disk=settings.edge_vectors_on_disk,
            hnsw_ef=settings.edge_hnsw_ef,
            oversampling=settings.edge_oversampling,
        ),
        bulk_shard_points=settings.edge_bulk_shard_points,
    )


def load_models(settings: Settings) -> ModelSet:
    """Every file of LOOKALIKE_MODEL_PATH; EncoderError for a bad file or two files of one version."""
    return ModelSet.load(settings.model_path, settings.device, settings.ort_threads, settings.encoder_nice)


def as_model_set(models: Models) -> ModelSet:
    """A set from what a caller passed: a set, a list of encoders, or one encoder (or a stand-in for one)."""
    if isinstance(models, ModelSet):
        return models
    return ModelSet(list(models) if isinstance(models, list | tuple) else [models])  # type: ignore[list-item]


def batch_limits(settings: Settings, models: ModelSet) -> dict[str, BatchLimits]:
    limits = {}
    for version, encoder in models.encoders.items():
        max_batch_size, max_wait_ms = settings.batching(encoder.provider)  # "auto" = per device
        limits[version] = BatchLimits(
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            queue_max=settings.queue_max,
            max_hold_ms=settings.batch_max_hold_ms,
            drain_s=settings.shutdown_encoder_drain_s,
        )
    return limits


def make_fetcher(settings: Settings) -> ImageFetcher:
    return ImageFetcher(
        timeout_s=settings.fetch_timeout_s,
        max_bytes=settings.fetch_max_bytes,
        allow_private=settings.fetch_allow_private,
        max_connections=settings.fetch_max_connections,
        max_keepalive=settings.fetch_max_keepalive,
        keepalive_expiry_s=settings.fetch_keepalive_expiry_s,
        max_redirects=settings.fetch_max_redirects,
    )


@asynccontextmanager
async def running_service(
    settings: Settings, models: Models | None = None, store: VectorStore | None = None
) -> AsyncIterator[ItemService]:
    """The item service: models (warmed), store, batchers, fetcher, image admission and kept-image store, started
    and stopped in order. `models` / `store`: the caller's own (tests), else from Settings; a store passed in is
    left open (it belongs to the caller)."""
    model_set = as_model_set(models) if models is not None else load_models(settings)
    model_set.warmup()
    vector_store = store or make_store(settings)
    try:
        versions = vector_store.open(model_set.dims())
        limits = batch_limits(settings, model_set)
        fetcher = make_fetcher(settings)
        largest_batch = max(lim.max_batch_size for lim in limits.values())
        image_permits = Budget("images", settings.admitted_images(largest_batch))
        await model_set.start(limits)
        image_store = ImageStore(settings.image_store_dir())
        # reads in progress, counted by the read routes and watched by backfills (they yield to reads)
        read_traffic = ReadTraffic()
        service = ItemService(
            settings, model_set, vector_store, versions, fetcher, image_permits, image_store, read_traffic
        )
        _log_ready(service, versions, vector_store.count())
        try:
            yield service
        finally:
            await model_set.stop()
            await fetcher.aclose()
            await asyncio.to_thread(service.close)  # store calls in progress finish before the store closes
    finally:
        if store is None:
            vector_store.close()
        log.info("stopped cleanly")


def _log_ready(service: ItemService, versions: list[ModelVersion], items: int) -> None:
    serving = service.models.get(service.model_version)
    log.info(
        "ready: serving model %s on %s, versions %s, %d items",
        service.model_version,
        serving.provider if serving else "?",
        ", ".join(f"{v.model_version} ({v.state})" for v in versions),
        items,
    )
