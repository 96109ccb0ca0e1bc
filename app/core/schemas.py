"""Request and response bodies of the HTTP contract; the service returns the response models."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_serializer,
)
from pydantic import model_validator as _model_validator

from app.core.errors import LookalikeError
from app.core.photos import Matched, PhotoIn, PhotoOut, with_photos


def _encodable(value: str) -> str:
    # JSON can carry lone surrogates ("\ud800"); they cannot be stored or sent back as UTF-8.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return value


ITEM_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
ItemId = Annotated[str, Field(pattern=ITEM_ID_PATTERN, min_length=1, max_length=128)]
# A model version as the export writes it (e.g. siglip-base-fp32-0123456789ab) or as an operator named it.
MODEL_VERSION_PATTERN = r"^[A-Za-z0-9_.:@+/-]{1,128}$"
Text = Annotated[str, AfterValidator(_encodable)]
AttrValue = Annotated[StrictStr, AfterValidator(_encodable)] | StrictBool | StrictInt | StrictFloat
Status = Literal["on_sale", "sold"]
MAX_ATTRIBUTES = 64
BATCH_MAX = 256

# Fields a client may set on an item besides its image; PATCH accepts exactly these.
META_FIELDS = ("title", "category", "price", "seller_id", "status", "attributes")


def _check_attributes(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if len(value) > MAX_ATTRIBUTES:
        raise ValueError(f"at most {MAX_ATTRIBUTES} attributes")
    for key, item in value.items():
        if not 1 <= len(key) <= 64:
            raise ValueError("attribute names must be 1..64 characters")
        _encodable(key)
        if isinstance(item, str) and len(item) > 512:
            raise ValueError(f"attribute {key!r} is longer than 512 characters")
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"attribute {key!r} must be a finite number")
    return value


class _Meta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Text | None = Field(None, max_length=512)
    category: Text | None = Field(None, min_length=1, max_length=128)
    price: float | None = Field(None, ge=0, allow_inf_nan=False)
    seller_id: Text | None = Field(None, min_length=1, max_length=128)
    attributes: dict[str, AttrValue] | None = None

    _attrs = field_validator("attributes")(_check_attributes)


class ItemIn(_Meta):
    """POST /items body (JSON) or the fields of the multipart form.

    The listing's photos: `images` (in order, photo 0 is the cover; at most LOOKALIKE_MAX_PHOTOS, checked by
    the service: too_many_photos), or the one-photo form image_url / image_base64.
    """

    item_id: ItemId
    image_url: str | None = Field(None, min_length=1, max_length=2048)
    image_base64: str | None = Field(None, min_length=1)
    images: list[PhotoIn] | None = Field(None, min_length=1)
    status: Status = "on_sale"

    @_model_validator(mode="after")
    def _one_image_source(self) -> ItemIn:
        given = [f for f in ("image_url", "image_base64", "images") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of image_url or image_base64 (or images: several photos)")
        return self

    def photos(self) -> list[PhotoIn]:
        """The listing's photos in order, whichever form they came in."""
        if self.images is not None:
            return self.images
        return [PhotoIn(url=self.image_url, base64=self.image_base64)]

    def metadata(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in META_FIELDS}


class ItemMetaIn(_Meta):
    """The multipart form's fields: like ItemIn, the image comes as the file field `image`."""

    item_id: ItemId
    status: Status = "on_sale"

    def metadata(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in META_FIELDS}


class ItemForm(ItemMetaIn):
    """POST /items as multipart/form-data, for the OpenAPI document: the fields plus the file `image`.

    In a form, OpenAPI sends object fields (attributes) as JSON parts and the rest as text.
    """

    image: bytes


class ItemPatch(_Meta):
    """PATCH /items/{id}: only the fields present change; null removes a field (status cannot be null)."""

    status: Status | None = None

    @_model_validator(mode="after")
    def _not_empty(self) -> ItemPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one of " + ", ".join(META_FIELDS))
        if "status" in self.model_fields_set and self.status is None:
            raise ValueError("status cannot be null; use on_sale or sold")
        return self

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Items are validated one by one in the service, so one bad item (even one that is not an object)
    # never fails the others.
    items: list[Any] = Field(min_length=1, max_length=BATCH_MAX)


class ItemWriteOut(BaseModel):
    item_id: str
    model_version: str
    created: bool


class ErrorDetail(BaseModel):
    code: str
    message: str
    photo: int | None = None  # the listing's photo the error is about (left out of the body when none)

    @classmethod
    def of(cls, error: LookalikeError) -> ErrorDetail:
        return cls(code=error.code, message=error.message, photo=error.photo)

    @model_serializer(mode="wrap")
    def _without_empty_photo(self, handler: Any) -> dict[str, Any]:
        body: dict[str, Any] = handler(self)
        if body.get("photo") is None:
            body.pop("photo", None)
        return body


class ErrorBody(BaseModel):
    error: ErrorDetail


class BatchResult(BaseModel):
    """One item of POST /items/batch: its own status, and the error (as in an error body) when it failed."""

    item_id: str | None
    status: int
    error: ErrorDetail | None = None

    @classmethod
    def failed(cls, item_id: str | None, error: LookalikeError) -> BatchResult:
        return cls(item_id=item_id, status=error.status, error=ErrorDetail.of(error))


class BatchOut(BaseModel):
    results: list[BatchResult]


class ItemOut(BaseModel):
    item_id: str
    title: str | None = None
    category: str | None = None
    price: float | None = None
    seller_id: str | None = None
    status: Status = "on_sale"
    attributes: dict[str, AttrValue] | None = None
    image_url: str | None = None  # kept when the cover was written from a URL (GET /items/{id}/image)
    photo_count: int = 1
    photos: list[PhotoOut] = []
    model_version: str
    indexed_at: float

    _photos = _model_validator(mode="before")(with_photos)


class SimilarItem(BaseModel):
    item_id: str
    score: float
    matched: Matched | None = None  # null only for results of a store without photo pairs (none today)
    title: str | None = None
    category: str | None = None
    price: float | None = None
    seller_id: str | None = None
    status: Status = "on_sale"


class SimilarResponse(BaseModel):
    item_id: str
    model_version: str
    results: list[SimilarItem]
    # Inside a running experiment (GET /similar with its unit's user_id or session_id); null otherwise.
    request_id: str | None = None
    experiment: str | None = None
    variant: str | None = None
    attribution_token: str | None = None


class SimilarQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(10, ge=1, le=100)
    category: str | None = Field(None, min_length=1, max_length=128)
    min_price: float | None = Field(None, ge=0, allow_inf_nan=False)
    max_price: float | None = Field(None, ge=0, allow_inf_nan=False)
    include_sold: bool = False
    exclude_same_seller: bool = False
    # rank with this model version (an active one, see GET /models); None = the serving version
    model_version: str | None = Field(None, pattern=MODEL_VERSION_PATTERN)

    @_model_validator(mode="after")
    def _price_range(self) -> SimilarQuery:
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError("min_price must not exceed max_price")
        return self


UNIT_ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,128}$"


class SimilarItemQuery(SimilarQuery):
    """GET /similar/{item_id}: the filters, the model version, and the experiment unit (user or session id).
    A model version given explicitly ranks the answer and keeps it out of any experiment."""

    # The running experiment assigns a variant when the id of its unit is given.
    user_id: str | None = Field(None, pattern=UNIT_ID_PATTERN)
    session_id: str | None = Field(None, pattern=UNIT_ID_PATTERN)


class SimilarImageFields(SimilarQuery):
    """POST /similar besides the image: GET /similar's filters and model version, the seller to leave out."""

    # There is no query item whose seller could be left out: exclude_same_seller needs this seller id.
    seller_id: str | None = Field(None, min_length=1, max_length=128)

    @_model_validator(mode="after")
    def _seller_given(self) -> SimilarImageFields:
        if self.exclude_same_seller and self.seller_id is None:
            raise ValueError("exclude_same_seller needs seller_id (a search by photo has no item to take it from)")
        return self


class SimilarImageIn(SimilarImageFields):
    """POST /similar as JSON: the photo as a URL or base64, never stored."""

    image_url: str | None = Field(None, min_length=1, max_length=2048)
    image_base64: str | None = Field(None, min_length=1)

    @_model_validator(mode="after")
    def _one_image_source(self) -> SimilarImageIn:
        if (self.image_url is None) == (self.image_base64 is None):
            raise ValueError("give exactly one of image_url or image_base64")
        return self

    def fields(self) -> SimilarImageFields:
        return SimilarImageFields.model_validate(self.model_dump(exclude={"image_url", "image_base64"}))


class SimilarImageForm(SimilarImageFields):
    """POST /similar as multipart/form-data, for the OpenAPI document: the fields plus the file `image`."""

    image: bytes


class SimilarImageResponse(BaseModel):
    model_version: str
    results: list[SimilarItem]


ITEM_PAGE_MAX = 200


class ItemListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(50, ge=1, le=ITEM_PAGE_MAX)
    cursor: str | None = Field(None, min_length=1, max_length=64)
    category: str | None = Field(None, min_length=1, max_length=128)
    status: Status | None = None


class ItemPageOut(BaseModel):
    items: list[ItemOut]
    next_cursor: str | None


class InfoOut(BaseModel):
    model_version: str
    random_weights: bool  # the model was exported with random weights: its rankings mean nothing
    # LOOKALIKE_ALLOW_UNAUTHENTICATED: the service was told to start without an API key on any address
    allow_unauthenticated: bool = False


class ModelVersionOut(BaseModel):
    """One model version of the collection (GET /models). The model fields are null without a loaded file."""

    model_version: str
    state: Literal["serving", "candidate", "retired"]
    coverage: float  # fraction of the items that have this version's vector, 0..1 (1 for an empty catalog)
    items_missing: int
    dim: int
    image_size: int | None
    precision: str | None
    provider: str | None


class ModelsOut(BaseModel):
    serving: str
    versions: list[ModelVersionOut]


class PromoteOut(BaseModel):
    serving: str  # the version now serving
    previous: str  # the version that served before (promote it again to roll back)
    coverage: float
    items_missing: int  # items without the new serving version's vector: they drop out of /similar results


class RetireOut(BaseModel):
    model_version: str
    state: Literal["retired"]


class BackfillOut(BaseModel):
    """A backfill's status (POST/GET /models/{version}/backfill); `idle` = none has run since the service started."""

    version: str
    state: Literal["idle", "running", "done", "failed", "stopped"]
    partition: str  # "I/N" of the catalog this run covers ("0/1": all of it)
    scanned: int
    embedded: int
    skipped: int  # deleted or rewritten while the run went: nothing to do
    failed: int  # image no longer fetchable or decodable: the item keeps the versions it has
    failed_ids: list[str]  # the first 100
    coverage: float  # share of all items that have the version's vector
    missing_at_start: int | None
    error: str | None
    started_at: float | None
    finished_at: float | None


EVENTS_MAX = 1000


class EventsIn(BaseModel):
    """POST /events: each event is checked on its own (app/experiments/events.py), so one bad event (even one
    that is not an object) never fails the others."""

    model_config = ConfigDict(extra="forbid")
    events: list[Any] = Field(min_length=1, max_length=EVENTS_MAX)


class EventResult(BaseModel):
    index: int
    status: int  # 200 accepted (on disk), else the event's own 4xx
    error: ErrorDetail | None


class EventsOut(BaseModel):
    accepted: int
    results: list[EventResult]
