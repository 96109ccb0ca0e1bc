"""Backfill routes: POST /models/{version}/backfill starts one in the background, GET answers its status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from app.core.schemas import BackfillOut
from app.http.answers import answer
from app.http.routes import ERRORS, AdminAuth, BackfillRuns, ModelVersionPath
from app.service.backfill import Partition

router = APIRouter()


@router.post(
    "/models/{version}/backfill",
    status_code=202,
    response_model=BackfillOut,
    responses=ERRORS,
    dependencies=[AdminAuth],
)
async def start_backfill(
    version: ModelVersionPath,
    backfills: BackfillRuns,
    partition: Annotated[str | None, Query(max_length=32, description="I/N: this share of the catalog")] = None,
) -> JSONResponse:
    """Embed with `version` every item that lacks its vector, in the background; while one runs, its status."""
    status = await backfills.start(version, Partition.parse(partition))
    return answer(BackfillOut.model_validate(status.as_dict()), 202)


@router.get("/models/{version}/backfill", response_model=BackfillOut, responses=ERRORS)
async def backfill_status(version: ModelVersionPath, backfills: BackfillRuns) -> JSONResponse:
    return answer(BackfillOut.model_validate((await backfills.status(version)).as_dict()))
