"""Online experiments in the service: what the experiment routes and GET /similar do for them, without HTTP.

Composed from app/experiments: the registry (kept with the vector store's get_meta/put_meta, so replicas share
it), assignment, attribution tokens, the event log
and the report. Logging:
- served answers (GET /similar inside an experiment) are queued and group-committed by a background thread every
  few milliseconds (app/experiments/group_commit.py): no fsync on an answer's path; a served row may be lost on
  kill -9 (events that refer to it still count);
- POST /events acknowledgements are durable: the accepted events are fsynced before the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from app.core import metrics
from app.core.errors import ModelNotFound
from app.core.schemas import SimilarItemQuery, SimilarResponse
from app.core.settings import Settings
from app.experiments.assignment import assign, served_variant
from app.experiments.definitions import Experiment, ExperimentSpec, load_experiments_file
from app.experiments.event_log import Event, EventLog
from app.experiments.events import EventRecorder
from app.experiments.group_commit import GroupCommitLog
from app.experiments.registry import ExperimentRegistry, VersionCheck
from app.experiments.report import Format, render, report_from_log
from app.experiments.tokens import AttributionTokens
from app.service.items import ItemService
from app.store.base import VectorStore

log = logging.getLogger("lookalike")

SECRET_FILE = ".secret"  # in the event log root: not a replica folder (only folders are)
RUNNING_CACHE_S = 1.0  # how long a replica may serve a stale view of the running experiment


def events_secret(settings: Settings) -> str:
    """LOOKALIKE_EVENTS_SECRET, else the one generated beside the event log (a 0600 file): replicas that share
    the event log's volume share it; others each make their own, and refuse one another's tokens."""
    if settings.events_secret is not None:
        return settings.events_secret.get_secret_value()
    path = settings.events_root() / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret-")  # 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(secrets.token_urlsafe(32))
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # another replica made it first: use theirs
                os.link(tmp, path)  # atomic: a reader never sees a half-written secret
        finally:
            os.unlink(tmp)
    log.warning(
        "LOOKALIKE_EVENTS_SECRET is not set: using the secret generated in %s; every replica must share one "
        "secret (set LOOKALIKE_EVENTS_SECRET), else one replica refuses the tokens of another",
        path,
    )
    return path.read_text(encoding="utf-8").strip()


class _CountingLog:
    """Counts events in lookalike_experiment_events_total on their way to the log."""

    def __init__(self, log: EventLog | GroupCommitLog) -> None:
        self._log = log

    def append(self, events: Iterable[Event]) -> int:
        batch = list(events)
        written = self._log.append(batch)
        for event in batch:
            metrics.experiment_events.labels(event.experiment, event.variant, event.type).inc()
        return written


class ExperimentService:
    def __init__(
        self,
        items: ItemService,
        registry: ExperimentRegistry,
        tokens: AttributionTokens,
        log: EventLog,
        events_root: Path,
    ) -> None:
        self.items = items
        self.registry = registry
        self.events_root = events_root
        self._log = log
        self._served_log = GroupCommitLog(log)
        self._served = EventRecorder(tokens, _CountingLog(self._served_log))  # type: ignore[arg-type]
        self._events = EventRecorder(tokens, _CountingLog(log))  # type: ignore[arg-type]
        self._running: tuple[float, Experiment | None] = (-RUNNING_CACHE_S, None)

    def close(self) -> None:
        self._served_log.close()
        self._log.close()

    def flush(self) -> None:
        """Write the served rows queued so far (the report reads only what is on disk)."""
        self._served_log.flush()

    # ---- the registry ----------------------------------------------------------------------------------

    async def put(self, name: str, spec: ExperimentSpec) -> tuple[Experiment, bool]:
        experiment, created = await asyncio.to_thread(self.registry.put, name, spec)
        self._running = (-RUNNING_CACHE_S, None)
        return experiment, created

    async def stop(self, name: str) -> Experiment:
        experiment = await asyncio.to_thread(self.registry.stop, name)
        self._running = (-RUNNING_CACHE_S, None)
        return experiment

    async def list(self) -> list[Experiment]:
        return await asyncio.to_thread(self.registry.experiments)

    async def get(self, name: str) -> Experiment:
        return await asyncio.to_thread(self.registry.get, name)

    async def report(self, name: str, fmt: Format = "json") -> dict[str, Any] | str:
        experiment = await self.get(name)
        await asyncio.to_thread(self.flush)
        report = await asyncio.to_thread(report_from_log, experiment, self.events_root)
        return report if fmt == "json" else render(report, fmt)

    async def record(self, events: list[Any]) -> list[dict[str, Any]]:
        """POST /events: one result per event; the accepted ones are on disk when this returns."""
        return await asyncio.to_thread(self._events.record, events)

    # ---- GET /similar ------------------------------------------------------------------------------------

    async def running(self) -> Experiment | None:
        at, experiment = self._running
        if time.monotonic() - at >= RUNNING_CACHE_S:
            experiment = await asyncio.to_thread(self.registry.running)
            self._running = (time.monotonic(), experiment)
        return experiment

    async def similar(self, item_id: str, query: SimilarItemQuery) -> SimilarResponse:
        """Inside the running experiment (its unit's id given, no explicit model version): the assigned variant's
        list with request_id, experiment, variant and attribution_token; otherwise today's answer."""
        experiment = None if query.model_version is not None else await self.running()
        unit_id = None
        if experiment is not None:
            unit_id = query.user_id if experiment.unit == "user" else query.session_id
        if experiment is None or unit_id is None:
            return await self.items.similar(item_id, query)

        assigned = assign(experiment, unit_id)
        shown_variant = served_variant(experiment, assigned)
        ranked = self.items.similar(item_id, query.model_copy(update={"model_version": shown_variant.model_version}))
        shadow_query = query.model_copy(update={"model_version": assigned.model_version})
        try:
            if shown_variant is assigned:
                answer, shadow = await ranked, None
            else:  # shadow mode: the assigned variant's list is computed and logged, the control's is answered
                answer, shadow = await asyncio.gather(ranked, self.items.similar(item_id, shadow_query))
        except ModelNotFound:
            # A variant's version was retired under the running experiment: users keep getting answers.
            log.warning("experiment %s: a variant's model version is gone; answering outside it", experiment.name)
            return await self.items.similar(item_id, query)
        request_id, token = self._served.served(
            experiment=experiment.name,
            variant=shown_variant.name,
            unit_id=unit_id,
            query_item=item_id,
            shown=[r.item_id for r in answer.results],
            shadow_variant=assigned.name if shadow is not None else None,
            shadow_shown=[r.item_id for r in shadow.results] if shadow is not None else None,
        )
        return answer.model_copy(
            update={
                "request_id": request_id,
                "experiment": experiment.name,
                "variant": shown_variant.name,
                "attribution_token": token,
            }
        )


def version_check(store: VectorStore) -> VersionCheck:
    """A variant's model version must exist, be active and cover every item (coverage 1.0); else why not."""

    def check(version: str) -> bool | str:
        known = {v.model_version: v for v in store.versions()}
        if version not in known or known[version].state == "retired":
            active = sorted(v.model_version for v in known.values() if v.state != "retired")
            return f"unknown or retired model version (active: {', '.join(active)})"
        have, total = store.coverage(version)
        return True if have == total else f"coverage {have}/{total} items: backfill it first"

    return check


def experiment_registry(settings: Settings, store: VectorStore) -> ExperimentRegistry:
    # The registry lives with the collection (the store's get_meta/put_meta): every replica sees it.
    return ExperimentRegistry(store, settings.collection, version_check=version_check(store))


def apply_experiments_file(settings: Settings, store: VectorStore) -> None:
    """LOOKALIKE_EXPERIMENTS_FILE -> the registry; a bad file or a refused change raises its LookalikeError.

    Applied once per start, by the runtime (app/service/runtime.py); `python -m app` starts the runtime before it
    serves, so a bad file stops start-up with one line. Applying the same design again changes nothing."""
    if settings.experiments_file is None:
        return
    applied = experiment_registry(settings, store).apply(load_experiments_file(settings.experiments_file))
    log.info("experiments file %s: %s", settings.experiments_file, ", ".join(e.name for e in applied) or "none")
