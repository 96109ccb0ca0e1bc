"""Thin HTTP routes: parse, call the service, answer through app/http/answers.py.

Errors are handled in app/http/app.py.
"""

from __future__ import annotations

import hmac
import json
from typing import Annotated, Any, TypeVar

import pydantic
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, SecretStr
from python_multipart.multipart import parse_options_header
from starlette.datastructures import UploadFile

from app.core.errors import BadRequest, Forbidden, NotReady, Unauthorized, ValidationError, validation_message
from app.core.schemas import (
    ITEM_ID_PATTERN,
    META_FIELDS,
    MODEL_VERSION_PATTERN,
    BatchIn,
    BatchOut,
    ErrorBody,
    InfoOut,
    ItemForm,
    ItemIn,
    ItemListQuery,
    ItemMetaIn,
    ItemOut,
    ItemPageOut,
    ItemPatch,
    ItemWriteOut,
    ModelsOut,
    PromoteOut,
    RetireOut,
    SimilarImageFields,
    SimilarImageForm,
    SimilarImageIn,
    SimilarImageResponse,
    SimilarItemQuery,
    SimilarResponse,
)
from app.http.answers import answer, write_answer
from app.http.page import router as page_router
from app.service.backfill import Backfills
from app.service.experiments import ExperimentService
from app.service.import_rows import ImportIn
from app.service.items import ItemService, KeptImage
from app.service.runtime import Services

router = APIRouter()
M = TypeVar("M", bound=BaseModel)
ItemIdPath = Annotated[str, Path(pattern=ITEM_ID_PATTERN, min_length=1, max_length=128)]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 415, 422, 424, 429, 503, 504)
}


def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None or not request.app.state.accepting:
        raise NotReady("the service is starting or stopping")
    return services


def get_service(request: Request) -> ItemService:
    return get_services(request).items


def get_experiments(request: Request) -> ExperimentService:
    return get_services(request).experiments


def get_backfills(request: Request) -> Backfills:
    return get_services(request).backfills


Service = Annotated[ItemService, Depends(get_service)]
Experiments = Annotated[ExperimentService, Depends(get_experiments)]
BackfillRuns = Annotated[Backfills, Depends(get_backfills)]


def _bearer(request: Request) -> bytes | None:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return given.strip().encode() if scheme.lower() == "bearer" else None


def _holds(given: bytes | None, key: SecretStr) -> bool:
    # compare_digest: the time taken does not tell how much of a guessed key was right
    return given is not None and hmac.compare_digest(given, key.get_secret_value().encode())


def require_write_key(request: Request) -> None:
    key = request.app.state.settings.api_key
    if key is not None and not _holds(_bearer(request), key):
        raise Unauthorized("writes need the header `Authorization: Bearer <LOOKALIKE_API_KEY>`")


def require_admin_key(request: Request) -> None:
    """Model administration and experiment changes: the admin key when one is set, else the write key."""
    settings = request.app.state.settings
    admin = settings.admin_api_key
    if admin is None:
        require_write_key(request)
        return
    given = _bearer(request)
    if _holds(given, admin):
        return
    if settings.api_key is not None and _holds(given, settings.api_key):
        raise Forbidden("the write key cannot administer models or experiments: use LOOKALIKE_ADMIN_API_KEY")
    raise Unauthorized("model administration needs the header `Authorization: Bearer <LOOKALIKE_ADMIN_API_KEY>`")


WriteAuth = Depends(require_write_key)
AdminAuth = Depends(require_admin_key)


def _loads(text: bytes | str, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # also bad UTF-8, 5000-digit numbers, 100k-deep nesting
        raise BadRequest(f"{what} is not valid JSON: {str(exc)[:200]}") from None


async def _parse_json(request: Request) -> Any:
    return _loads(await request.body(), "the body")


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {"schema": model.model_json_schema(ref_template="#/components/schemas/{model}")}


# POST /items reads its body itself (JSON or multipart), so FastAPI cannot see it: document both from the models.
ITEM_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/json": _body_schema(ItemIn), "multipart/form-data": _body_schema(ItemForm)},
    }
}


@router.post(
    "/items",
    status_code=201,
    response_model=ItemWriteOut,
    responses={200: {"model": ItemWriteOut, "description": "replaced"}, **ERRORS},
    openapi_extra=ITEM_BODY_DOC,
    dependencies=[WriteAuth],
)
async def post_item(request: Request, service: Service) -> JSONResponse:
    if _is_multipart(request):
        # one past the limit is read, so that it answers too_many_photos (the service checks the count)
        max_files = service.settings.max_photos + 1
        fields, photos = await _read_multipart(request, len(META_FIELDS) + 1, "multipart uploads", max_files)
        if "attributes" in fields:
            try:
                fields["attributes"] = _loads(fields["attributes"], "attributes")
            except BadRequest:
                raise ValidationError("attributes must be a JSON object") from None
        meta = _validated(ItemMetaIn, fields)
        return write_answer(await service.index_upload(meta.item_id, meta.metadata(), photos))
    item = _validated(ItemIn, await _parse_json(request))
    return write_answer(await service.index_item(item))


def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("multipart/form-data")


async def _read_multipart(
    request: Request, max_fields: int, what: str, max_files: int = 1
) -> tuple[dict[str, Any], list[bytes]]:
    """The text fields and the bytes of the file fields `image`, in order, of a multipart body (POST /items: a
    listing's photos; POST /similar: one photo).

    A malformed multipart body (or more than `max_files` files) makes Starlette raise HTTPException(400) ->
    bad_request.
    """
    # The parser accepts a body cut before its closing boundary; a cut upload is malformed, not an item.
    _, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if boundary and b"\r\n--" + boundary + b"--" not in await request.body():
        raise BadRequest("the multipart body is incomplete (no closing boundary)")
    async with request.form(max_files=max_files, max_fields=max_fields + max_files) as form:
        images = [f for f in form.getlist("image") if isinstance(f, UploadFile)]
        if not images:
            raise ValidationError(f"{what} need a file field `image`")
        fields: dict[str, Any] = {k: v for k, v in form.items() if k != "image" and isinstance(v, str)}
        return fields, [await image.read() for image in images]


def _validated(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ValidationError(validation_message(exc.errors())) from None


@router.post("/items/batch", response_model=BatchOut, responses=ERRORS, dependencies=[WriteAuth])
async def post_batch(batch: BatchIn, service: Service) -> JSONResponse:
    return answer(BatchOut(results=await service.index_items(batch.items)))


@router.post("/items/import", response_model=BatchOut, responses=ERRORS, dependencies=[AdminAuth])
async def post_import(body: ImportIn, service: Service) -> JSONResponse:
    """Items with the vectors a batch job made (`lookalike import --url`): checked, then written like a batch,
    nothing fetched or embedded."""
    return answer(BatchOut(results=await service.import_items(body.model_version, body.items)))


@router.get("/items/{item_id}", response_model=ItemOut, responses=ERRORS)
async def get_item(item_id: ItemIdPath, service: Service) -> JSONResponse:
    return answer(await service.get(item_id))


@router.patch("/items/{item_id}", response_model=ItemOut, responses=ERRORS, dependencies=[WriteAuth])
async def patch_item(item_id: ItemIdPath, patch: ItemPatch, service: Service) -> JSONResponse:
    return answer(await service.patch(item_id, patch))


@router.delete("/items/{item_id}", status_code=204, responses=ERRORS, dependencies=[WriteAuth])
async def delete_item(item_id: ItemIdPath, service: Service) -> Response:
    await service.delete(item_id)
    return Response(status_code=204)


@router.get("/similar/{item_id}", response_model=SimilarResponse, responses=ERRORS)
async def similar(
    item_id: ItemIdPath, query: Annotated[SimilarItemQuery, Query()], experiments: Experiments
) -> JSONResponse:
    """Top-k look-alikes. With `user_id` (or `session_id`) inside a running experiment whose unit it is, the
    assigned variant's model ranks and the answer carries request_id, experiment, variant and attribution_token."""
    return answer(await experiments.similar(item_id, query))


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorBody}})
async def readyz(service: Service) -> dict[str, str]:
    if not await service.ready():
        raise NotReady("the encoder queue is full or the vector store does not answer")
    return {"status": "ready"}


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


# ---- search by photo, browsing, the page ------------------------------------------------------------

SIMILAR_IMAGE_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": _body_schema(SimilarImageIn),
            "multipart/form-data": _body_schema(SimilarImageForm),
        },
    }
}


@router.post(
    "/similar",
    response_model=SimilarImageResponse,
    responses={404: {"model": ErrorBody, "description": "model_not_found"}, **ERRORS},
    openapi_extra=SIMILAR_IMAGE_DOC,
)
async def similar_to_image(request: Request, service: Service) -> JSONResponse:
    """Look-alikes of a photo (search by photo). The photo is embedded like a POST /items image, never stored."""
    if _is_multipart(request):
        fields, (data,) = await _read_multipart(request, len(SimilarImageFields.model_fields), "multipart searches")
        return answer(await service.similar_to_image(data, _validated(SimilarImageFields, fields)))
    body = _validated(SimilarImageIn, await _parse_json(request))
    source = body.image_url if body.image_url is not None else service.decode_base64_image(body.image_base64 or "")
    return answer(await service.similar_to_image(source, body.fields()))


@router.get("/items", response_model=ItemPageOut, responses=ERRORS)
async def list_items(query: Annotated[ItemListQuery, Query()], service: Service) -> JSONResponse:
    """Items in a stable order, a page at a time: pass `next_cursor` back as `cursor` until it is null."""
    return answer(await service.list_items(query))


@router.get(
    "/items/{item_id}/image",
    response_class=Response,
    responses={
        200: {"description": "the kept bytes of an item written from an upload or base64", "content": {"image/*": {}}},
        304: {"description": "If-None-Match matched the ETag"},
        307: {"description": "redirect to the URL the item was written from"},
        **ERRORS,
    },
)
async def item_image(item_id: ItemIdPath, request: Request, service: Service) -> Response:
    """The item's photo: its kept bytes (ETag = the image write), or a redirect to the URL it was written from."""
    return _image_answer(await service.image(item_id), request)


def _image_answer(image: KeptImage | str, request: Request) -> Response:
    if not isinstance(image, KeptImage):
        return RedirectResponse(image, status_code=307, headers={"Cache-Control": "no-cache"})
    # no-cache: a replaced item keeps this URL, so caches revalidate (a 304 while the image is unchanged)
    headers = {"ETag": f'"{image.etag}"', "Cache-Control": "no-cache"}
    if _etag_matches(request.headers.get("if-none-match"), image.etag):
        return Response(status_code=304, headers=headers)
    return Response(image.data, media_type=image.content_type, headers=headers)


@router.get(
    "/items/{item_id}/images/{n}",
    response_class=Response,
    responses={
        200: {"description": "photo n's kept bytes (written from an upload or base64)", "content": {"image/*": {}}},
        307: {"description": "redirect to the URL photo n was written from"},
        304: {"description": "unchanged since the ETag given in If-None-Match"},
        **ERRORS,
    },
)
async def item_photo(
    item_id: ItemIdPath, n: Annotated[int, Path(ge=0)], request: Request, service: Service
) -> Response:
    """Photo n of the listing (0 is the cover, as GET /items/{id}/image): kept bytes or a redirect."""
    return _image_answer(await service.image(item_id, n), request)


def _etag_matches(header: str | None, etag: str) -> bool:
    if header is None:
        return False
    tags = {tag.strip().removeprefix("W/").strip('"') for tag in header.split(",")}
    return etag in tags or "*" in tags


# ---- model versions (admin: the admin key, else the write key) ------------------------------------


@router.get("/models", response_model=ModelsOut, responses=ERRORS)
async def list_models(service: Service) -> JSONResponse:
    """The collection's model versions: which serves, which are candidates, how far each one's vectors reach."""
    return answer(await service.list_models())


ModelVersionPath = Annotated[str, Path(pattern=MODEL_VERSION_PATTERN)]


@router.post("/models/{version}/promote", response_model=PromoteOut, responses=ERRORS, dependencies=[AdminAuth])
async def promote_model(version: ModelVersionPath, service: Service, force: bool = False) -> JSONResponse:
    """Make VERSION serve /similar (409 model_not_ready while items lack its vector, unless force=true)."""
    return answer(await service.promote(version, force))


@router.delete("/models/{version}", response_model=RetireOut, responses=ERRORS, dependencies=[AdminAuth])
async def retire_model(version: ModelVersionPath, service: Service) -> JSONResponse:
    """Retire a non-serving VERSION: its vectors are dropped and their space freed (409 model_serving if serving)."""
    return answer(await service.retire(version))


@router.get("/info", response_model=InfoOut)
async def info(request: Request, service: Service) -> JSONResponse:
    """The served model version, whether it has random weights (the page shows a banner then), and whether
    the service was allowed to start without an API key (LOOKALIKE_ALLOW_UNAUTHENTICATED)."""
    allowed = request.app.state.settings.allow_unauthenticated
    return answer(service.info().model_copy(update={"allow_unauthenticated": allowed}))


router.include_router(page_router)  # the web page: GET / and its static files
