"""create_app(): the FastAPI application; its lifespan runs the service (app/service/runtime.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.errors import LookalikeError, error_body, status_of
from app.core.settings import Settings, load_settings
from app.encode.encoder import OnnxImageEncoder
from app.http.middleware import BodySizeLimit, RequestMetrics
from app.http.routes import router
from app.ingest.admission import Budget
from app.service.runtime import running_service
from app.store.base import VectorStore

log = logging.getLogger("lookalike")


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
    body_budget = Budget("body_bytes", settings.admission_body_bytes)  # admission of request bodies
    app.add_middleware(BodySizeLimit, max_bytes=settings.request_max_bytes, budget=body_budget)
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
