"""The one place that turns service results and errors into HTTP answers.

The service answers with the response models of app/core/schemas.py and raises LookalikeError
subclasses, whose class attributes give the status and Retry-After.
"""

from __future__ import annotations

from pydantic import BaseModel
from starlette.responses import JSONResponse

from app.core.errors import LookalikeError
from app.core.schemas import ErrorBody, ErrorDetail, ItemWriteOut


def answer(body: BaseModel, status: int = 200) -> JSONResponse:
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


def write_answer(result: ItemWriteOut) -> JSONResponse:
    """201 for a new item, 200 for a replaced one."""
    return answer(result, 201 if result.created else 200)


def error_answer(error: LookalikeError, headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail.of(error)).model_dump(mode="json") | (error.extra or {})
    response = JSONResponse(body, status_code=error.status)
    if error.retry_after_s is not None:
        response.headers["Retry-After"] = str(error.retry_after_s)
    response.headers.update(headers or {})
    return response
