"""create_app(): the FastAPI application; its lifespan owns the encoder, the store and the batcher."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import metrics
from app.api import router
from app.batcher import MicroBatcher
from app.config import Settings, load_settings
from app.encoder import OnnxImageEncoder
from app.errors import LookalikeError, error_body, status_of
from app.fetch import ImageFetcher
from app.middleware import BodySizeLimit, RequestMetrics
from app.service import ItemService
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
        vector_store.ensure_collection(enc.dim, enc.model_version)
        max_batch_size, max_wait_ms = settings.batching(enc.provider)  # "auto" = per device
        batcher = MicroBatcher(
            enc.embed,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            queue_max=settings.queue_max,
        )
        fetcher = ImageFetcher(
            timeout_s=settings.fetch_timeout_s,
            max_bytes=settings.fetch_max_bytes,
            allow_private=settings.fetch_allow_private,
        )
        await batcher.start()
        log.info(
            "ready: model %s on %s (batches of up to %d, %g ms wait), %d items",
            enc.model_version,
            enc.provider,
            max_batch_size,
            max_wait_ms,
            vector_store.count(),
        )
        service = ItemService(settings, enc, vector_store, batcher, fetcher)
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


def create_app(
    settings: Settings | None = None,
    encoder: OnnxImageEncoder | None = None,
    store: VectorStore | None = None,
) -> FastAPI:
    """Build the app. Encoder and store are created in the lifespan unless given (tests pass their own)."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running_service(settings, encoder, store) as service:
            app.state.service = service
            app.state.accepting = True
            try:
                yield
            finally:
                # Not ready first; uvicorn has stopped accepting and waits for in-flight requests.
                app.state.accepting = False

    app = FastAPI(
        title="lookalike",
        version="0.1.0",
        summary="Visually similar marketplace listings",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.accepting = False
    app.include_router(router)
    _install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.request_max_bytes)
    app.add_middleware(RequestMetrics)
    return app


def _json_error(status: int, code: str, message: str, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LookalikeError)
    async def domain_error(request: Request, exc: LookalikeError) -> JSONResponse:
        return _json_error(status_of(exc), exc.code, exc.message, exc.retry_after_s)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _json_error(400, "bad_request", "the body is not valid JSON")
        message = "; ".join(
            ".".join(str(p) for p in e.get("loc", ()) if p != "body") + f": {e.get('msg')}" for e in errors
        )
        return _json_error(422, "validation_error", message or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        if exc.status_code in codes:
            return _json_error(exc.status_code, codes[exc.status_code], str(exc.detail))
        if exc.status_code == 400:
            return _json_error(400, "bad_request", str(exc.detail))
        return _json_error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        request_id = request.scope.get("state", {}).get("request_id", "-")
        log.exception("internal error, request id %s", request_id)
        return _json_error(500, "internal", f"internal error (request id {request_id})")
