"""Domain errors and the one table that maps each error code to an HTTP status.

Everything below the API raises `LookalikeError` subclasses; app/http/routes.py turns them into
`{"error": {"code", "message"}}` bodies through `STATUS`. Nothing else picks status codes.
"""

from __future__ import annotations

from typing import ClassVar


class LookalikeError(Exception):
    code: ClassVar[str] = "internal"
    retry_after_s: ClassVar[int | None] = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(LookalikeError):
    code = "bad_request"


class Unauthorized(LookalikeError):
    code = "unauthorized"


class ItemNotFound(LookalikeError):
    code = "item_not_found"

    def __init__(self, item_id: str) -> None:
        super().__init__(f"no item with item_id {item_id!r}")


class PayloadTooLarge(LookalikeError):
    code = "payload_too_large"


class ImageTooLarge(LookalikeError):
    code = "image_too_large"


class UnsupportedImageType(LookalikeError):
    code = "unsupported_image_type"


class ValidationFailed(LookalikeError):
    code = "validation_error"


class ImageDecodeError(LookalikeError):
    code = "image_decode_error"


class UrlNotAllowed(LookalikeError):
    code = "url_not_allowed"


class ImageFetchFailed(LookalikeError):
    code = "image_fetch_failed"


class Overloaded(LookalikeError):
    code = "overloaded"
    retry_after_s = 1


class NotReady(LookalikeError):
    code = "not_ready"
    retry_after_s = 5


class StoreUnavailable(LookalikeError):
    code = "store_unavailable"
    retry_after_s = 5


class ImageFetchTimeout(LookalikeError):
    code = "image_fetch_timeout"


class ModelMismatch(LookalikeError):
    """Start-up only: the collection holds vectors of another model (never an HTTP answer)."""

    code = "internal"


class ModelNotFound(LookalikeError):
    """A request named a model version this service does not serve."""

    code = "model_not_found"
    status = 404


class ImageNotFound(LookalikeError):
    """The item exists but no image of it is kept (it was written from bytes, not from a URL)."""

    code = "image_not_found"
    status = 404


class InvalidCursor(LookalikeError):
    """A GET /items cursor that this service did not hand out (or that was altered)."""

    code = "invalid_cursor"
    status = 422


STATUS: dict[str, int] = {
    "bad_request": 400,
    "unauthorized": 401,
    "item_not_found": 404,
    "model_not_found": 404,
    "image_not_found": 404,
    "payload_too_large": 413,
    "image_too_large": 413,
    "unsupported_image_type": 415,
    "validation_error": 422,
    "image_decode_error": 422,
    "url_not_allowed": 422,
    "invalid_cursor": 422,
    "image_fetch_failed": 424,
    "overloaded": 429,
    "not_ready": 503,
    "store_unavailable": 503,
    "image_fetch_timeout": 504,
    "internal": 500,
}


def status_of(error: LookalikeError) -> int:
    return STATUS[error.code]


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}
