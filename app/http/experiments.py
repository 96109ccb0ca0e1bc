"""Experiment routes: define, stop, list and read experiments, their report, and POST /events.

Changes (PUT, stop) need the admin key (LOOKALIKE_ADMIN_API_KEY; without one, the write key); POST /events is
called by the marketplace's front end with attribution tokens, which are the proof of each event, so it needs no key.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from app.core.schemas import ErrorBody, EventsIn, EventsOut
from app.experiments.definitions import NAME_PATTERN, Experiment, ExperimentSpec
from app.http.answers import answer
from app.http.routes import ERRORS, AdminAuth, Experiments

router = APIRouter(tags=["experiments"])
NamePath = Annotated[str, Path(pattern=NAME_PATTERN)]
CONFLICT = {409: {"model": ErrorBody, "description": "experiment_conflict"}}


@router.put(
    "/experiments/{name}",
    status_code=201,
    response_model=Experiment,
    responses={200: {"model": Experiment, "description": "unchanged"}, **CONFLICT, **ERRORS},
    dependencies=[AdminAuth],
)
async def put_experiment(name: NamePath, spec: ExperimentSpec, experiments: Experiments) -> JSONResponse:
    """Create and start an experiment (201), or repeat its design (200). 409 when another one runs, when the
    design would change, or when a variant's model version is unknown or not fully covered."""
    experiment, created = await experiments.put(name, spec)
    return answer(experiment, 201 if created else 200)


@router.post("/experiments/{name}/stop", response_model=Experiment, responses=ERRORS, dependencies=[AdminAuth])
async def stop_experiment(name: NamePath, experiments: Experiments) -> JSONResponse:
    return answer(await experiments.stop(name))


@router.get("/experiments", response_model=dict[str, list[Experiment]])
async def list_experiments(experiments: Experiments) -> JSONResponse:
    found = await experiments.list()
    return JSONResponse({"experiments": [e.model_dump(mode="json") for e in found]})


@router.get("/experiments/{name}", response_model=Experiment, responses=ERRORS)
async def get_experiment(name: NamePath, experiments: Experiments) -> JSONResponse:
    return answer(await experiments.get(name))


REPORT_TYPES = {"application/json": {}, "text/plain": {}, "text/html": {}}


@router.get("/experiments/{name}/report", responses={200: {"content": REPORT_TYPES}, **ERRORS})
async def experiment_report(
    name: NamePath,
    experiments: Experiments,
    format: Annotated[Literal["json", "table", "html"], Query()] = "json",
) -> Response:
    """Per variant: units, served, impressions, clicks, purchases, CTR and conversion with 95% intervals, lift
    over the control, SRM check, CTR by position and over time (`?format=html` for a page, `table` for text)."""
    report = await experiments.report(name, format)
    if format == "html":
        return HTMLResponse(str(report))
    if format == "table":
        return PlainTextResponse(str(report))
    return JSONResponse(report)


@router.post("/events", response_model=EventsOut, responses=ERRORS)
async def post_events(body: EventsIn, experiments: Experiments) -> JSONResponse:
    """`{"events": [...]}`, 1 to 1000 events, each checked on its own: one result per event
    `{"index", "status", "error": {"code", "message"} | null}`. Every event answered 200 is on disk."""
    results = await experiments.record(body.events)
    return answer(EventsOut(accepted=sum(r["status"] == 200 for r in results), results=results))
