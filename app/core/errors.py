"""Domain errors: each class carries its error code, HTTP status and Retry-After.

Everything below the API raises `LookalikeError` subclasses, each named after its code (`item_not_found`:
ItemNotFound, `internal`: InternalError); app/http/answers.py turns any of them into a `{"error": {"code",
"message"}}` answer from these class attributes. Nothing else picks status codes.
docs/api.md's error table lists every code (tests/unit/test_errors.py checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar


class LookalikeError(Exception):
    code: ClassVar[str]
    status: ClassVar[int]
    retry_after_s: ClassVar[int | None] = None  # set for 429 and 503: when a retry may succeed
    extra: dict[str, Any] | None = None  # more of the answer's body, beside `error` (e.g. a running backfill)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.photo: int | None = None  # the listing's photo (index) that failed, for a listing's photo errors

    def at_photo(self, index: int) -> LookalikeError:
        """This error, naming the photo of a listing it is about (`"photo": index` in the error body)."""
        self.photo = index
        return self


class BadRequest(LookalikeError):
    code = "bad_request"
    status = 400


class Unauthorized(LookalikeError):
    code = "unauthorized"
    status = 401


class Forbidden(LookalikeError):
    """A valid key that is not allowed here: the write key on a model-administration route (LOOKALIKE_ADMIN_API_KEY)."""

    code = "forbidden"
    status = 403


class ItemNotFound(LookalikeError):
    code = "item_not_found"
    status = 404

    def __init__(self, item_id: str) -> None:
        super().__init__(f"no item with item_id {item_id!r}")


class NotFound(LookalikeError):
    """No such route, or no such static file of the page."""

    code = "not_found"
    status = 404


class ExperimentNotFound(LookalikeError):
    code = "experiment_not_found"
    status = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"no experiment named {name!r}")


class MethodNotAllowed(LookalikeError):
    code = "method_not_allowed"
    status = 405


class ExperimentConflict(LookalikeError):
    """The change would break a running experiment's design, start a second one, or use an unusable model version."""

    code = "experiment_conflict"
    status = 409


class BackfillRunning(LookalikeError):
    """A backfill of this model version is running already; the answer carries its status under `backfill`."""

    code = "backfill_running"
    status = 409

    def __init__(self, message: str, running: dict[str, Any]) -> None:
        super().__init__(message)
        self.extra = {"backfill": running}


class PayloadTooLarge(LookalikeError):
    code = "payload_too_large"
    status = 413

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the request body is over the limit of {max_bytes} bytes")


class ImageTooLarge(LookalikeError):
    code = "image_too_large"
    status = 413


class UnsupportedImageType(LookalikeError):
    code = "unsupported_image_type"
    status = 415


class ValidationError(LookalikeError):
    code = "validation_error"
    status = 422


class TooManyPhotos(LookalikeError):
    """A listing with more photos than LOOKALIKE_MAX_PHOTOS."""

    code = "too_many_photos"
    status = 422


class SinglePhotoVersion(LookalikeError):
    """A listing with several photos, while an active model version keeps one vector per listing (its vectors
    were created before listings had several photos): add a new model version, which holds every photo."""

    code = "single_photo_version"
    status = 409


class ImageDecodeError(LookalikeError):
    code = "image_decode_error"
    status = 422


class UrlNotAllowed(LookalikeError):
    code = "url_not_allowed"
    status = 422


class InvalidToken(LookalikeError):
    """An attribution token that is garbled, forged or signed with another secret."""

    code = "invalid_token"
    status = 422


class TokenExpired(LookalikeError):
    code = "token_expired"
    status = 422


class ItemNotShown(LookalikeError):
    """The event names an item (or position) that the token's answer did not show."""

    code = "item_not_shown"
    status = 422


class ImageFetchFailed(LookalikeError):
    code = "image_fetch_failed"
    status = 424


class Overloaded(LookalikeError):
    code = "overloaded"
    status = 429
    retry_after_s = 1


class InternalError(LookalikeError):
    """A bug: the answer names only the request id (the details go to the log)."""

    code = "internal"
    status = 500


class NotReady(LookalikeError):
    code = "not_ready"
    status = 503
    retry_after_s = 5


class StoreUnavailable(LookalikeError):
    """The vector store cannot be reached or did not answer in time; the stores raise it themselves."""

    code = "store_unavailable"
    status = 503
    retry_after_s = 5


class ImageFetchTimeout(LookalikeError):
    code = "image_fetch_timeout"
    status = 504


class ModelNotFound(LookalikeError):
    """A request named a model version this service does not serve."""

    code = "model_not_found"
    status = 404


class ModelNotReady(LookalikeError):
    """Items lack a vector of the model version (its backfill has not reached them): promote or a read of it."""

    code = "model_not_ready"
    status = 409


class ImageNotFound(LookalikeError):
    """The item exists but no image of it is kept."""

    code = "image_not_found"
    status = 404


class ModelServing(LookalikeError):
    """Retiring the version that serves /similar: promote another one first."""

    code = "model_serving"
    status = 409


class InvalidCursor(LookalikeError):
    """A GET /items cursor that this service did not hand out (or that was altered)."""

    code = "invalid_cursor"
    status = 422


def validation_message(
    errors: Iterable[Mapping[str, Any]], *, whole: str = "body", name: Callable[[str], str] = str
) -> str:
    """One line for pydantic's (or FastAPI's) validation errors: `field.sub: message; other: message`.

    `whole` names an error about the object as a whole (no field); `name` maps a field path to the
    name the caller knows it by (settings: the environment variable). FastAPI's leading "body" is dropped.
    """
    parts = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        where = ".".join(str(p) for p in (loc[1:] if loc[:1] == ("body",) else loc))
        parts.append(f"{name(where) if where else whole}: {err.get('msg')}")
    return "; ".join(parts)
