"""The FastAPI application: routes mapped onto the runtime (app/service/runtime.py), which builds everything.

create_app(): the lifespan starts the runtime and stops it (tests, `uvicorn app.http.app:...`);
app_for(runtime, started): the app on a runtime its caller has started (`python -m app`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.errors import (
    BadRequest,
    InternalError,
    LookalikeError,
    MethodNotAllowed,
    NotFound,
    ValidationError,
    validation_message,
)
from app.core.settings import Settings, load_settings
from app.http.answers import error_answer
from app.http.backfill import router as backfill_router
from app.http.experiments import router as experiments_router
from app.http.middleware import BodySizeLimit, RequestMetrics
from app.http.routes import router
from app.http.strict import reject_unknown_query
from app.service.runtime import Models, Runtime, Services, VectorStore

log = logging.getLogger("lookalike")


def create_app(
    settings: Settings | None = None, encoder: Models | None = None, store: VectorStore | None = None
) -> FastAPI:
    """The app; its lifespan starts the runtime. Models and store come from Settings unless given (tests)."""
    return app_for(Runtime(settings or load_settings(), encoder, store))


def app_for(runtime: Runtime, started: Services | None = None) -> FastAPI:
    """Routes onto `runtime`: the lifespan starts it, unless the caller passes it `started` already."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            app.state.services = started or await stack.enter_async_context(runtime.running())
            app.state.accepting = True
            try:
                yield
            finally:
                # Not ready first; uvicorn has stopped accepting and waits for in-flight requests.
                app.state.accepting = False

    settings = runtime.settings
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
    app.add_middleware(BodySizeLimit, max_bytes=settings.request_max_bytes, budget=runtime.body_budget)
    app.add_middleware(RequestMetrics)
    return app


# The HTTPExceptions Starlette and FastAPI raise themselves: a malformed body, an unknown route or method.
HTTP_ERRORS: dict[int, type[LookalikeError]] = {400: BadRequest, 404: NotFound, 405: MethodNotAllowed}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LookalikeError)
    async def domain_error(request: Request, exc: LookalikeError) -> JSONResponse:
        return error_answer(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_answer(BadRequest("the body is not valid JSON"))
        return error_answer(ValidationError(validation_message(errors) or "invalid request"))

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
