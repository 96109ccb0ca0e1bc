"""create_app(): the FastAPI application; its lifespan runs the service (app/service/runtime.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.errors import (
    BadRequest,
    InternalError,
    LookalikeError,
    MethodNotAllowed,
    RouteNotFound,
    ValidationFailed,
    validation_message,
)
from app.core.settings import Settings, load_settings
from app.encode.encoder import OnnxImageEncoder
from app.encode.models import ModelSet
from app.http.answers import error_answer
from app.http.backfill import router as backfill_router
from app.http.experiments import router as experiments_router
from app.http.middleware import BodySizeLimit, RequestMetrics
from app.http.routes import router
from app.http.strict import reject_unknown_query
from app.ingest.admission import Budget
from app.service.backfill import Backfills
from app.service.experiments import running_experiments
from app.service.runtime import running_service
from app.store.base import VectorStore

log = logging.getLogger("lookalike")


def create_app(
    settings: Settings | None = None,
    encoder: ModelSet | OnnxImageEncoder | Sequence[OnnxImageEncoder] | None = None,
    store: VectorStore | None = None,
) -> FastAPI:
    """Build the app. Models and store are created in the lifespan unless given (tests pass their own)."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running_service(settings, encoder, store) as service, running_experiments(settings, service) as exp:
            app.state.service = service
            app.state.experiments = exp
            app.state.backfills = Backfills(service)
            app.state.accepting = True
            try:
                yield
            finally:
                # Not ready first; uvicorn has stopped accepting and waits for in-flight requests.
                app.state.accepting = False
                # Backfills stop before the encoders drain: their images in flight are dropped (a rerun resumes).
                await app.state.backfills.stop()

    app = FastAPI(
        title="lookalike",
        version="0.1.0",
        summary="Visually similar marketplace listings",
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query)],  # every API route refuses unknown query parameters
    )
    app.state.settings = settings
    app.state.accepting = False
    app.include_router(router)
    app.include_router(backfill_router)
    app.include_router(experiments_router)
    _install_error_handlers(app)
    body_budget = Budget("body_bytes", settings.admission_body_bytes)  # admission of request bodies
    app.add_middleware(BodySizeLimit, max_bytes=settings.request_max_bytes, budget=body_budget)
    app.add_middleware(RequestMetrics)
    return app


# The HTTPExceptions Starlette and FastAPI raise themselves: a malformed body, an unknown route or method.
HTTP_ERRORS: dict[int, type[LookalikeError]] = {400: BadRequest, 404: RouteNotFound, 405: MethodNotAllowed}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LookalikeError)
    async def domain_error(request: Request, exc: LookalikeError) -> JSONResponse:
        return error_answer(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_answer(BadRequest("the body is not valid JSON"))
        return error_answer(ValidationFailed(validation_message(errors) or "invalid request"))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        request_id = request.scope.get("state", {}).get("request_id", "-")
        log.exception("internal error, request id %s", request_id)
        return error_answer(InternalError(f"internal error (request id {request_id})"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_class = HTTP_ERRORS.get(exc.status_code)
        if error_class is None:  # nothing here raises another status: it would be a bug
            return await internal_error(request, exc)
        return error_answer(error_class(str(exc.detail)))
