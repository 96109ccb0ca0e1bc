"""What GET /similar and POST /events do for experiments, without HTTP.

`EventRecorder.served` logs an answer shown in an experiment and returns its request id and attribution token;
`EventRecorder.record` checks a POST /events batch event by event (like /items/batch: one bad event never fails
the others), appends the accepted ones to its log in one batch (fsynced before `record` returns when that log
is an EventLog, as POST /events' is), and returns one result per event.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from app.core.errors import LookalikeError, ValidationError, validation_message
from app.core.schemas import EVENTS_MAX, ErrorDetail, ItemId
from app.experiments.event_log import Event, EventLog
from app.experiments.tokens import CLOCK_SKEW_S, AttributionTokens, new_request_id


class EventIn(BaseModel):
    """One event of POST /events."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["impression", "click", "purchase"]
    attribution_token: Annotated[str, Field(min_length=1, max_length=4096)]
    item_id: ItemId
    position: Annotated[int, Field(strict=True, ge=1)]
    ts: float | None = None  # unix seconds; default: when it arrives


class EventRecorder:
    def __init__(self, tokens: AttributionTokens, log: EventLog, *, clock: Callable[[], float] = time.time) -> None:
        self.tokens = tokens
        self.log = log
        self._clock = clock

    def served(
        self,
        *,
        experiment: str,
        variant: str,
        unit_id: str,
        query_item: str,
        shown: Sequence[str],
        shadow_variant: str | None = None,
        shadow_shown: Sequence[str] | None = None,
    ) -> tuple[str, str]:
        """Hand one answer to the log and return (request_id, attribution_token) for it. Durable only as far as
        that log is: the service gives it a group-commit log (app/experiments/group_commit.py), so the row is
        on disk within milliseconds, and lost if the process is killed before that."""
        now = self._clock()
        request_id = new_request_id()
        token = self.tokens.issue(
            request_id=request_id, experiment=experiment, variant=variant, unit_id=unit_id, query_item=query_item,
            shown=shown, issued_at=now,
        )  # fmt: skip
        event = Event(
            "served", request_id, experiment, variant, unit_id, query_item, now, shown=tuple(shown),
            shadow_variant=shadow_variant, shadow_shown=tuple(shadow_shown) if shadow_shown is not None else None,
        )  # fmt: skip
        self.log.append([event])
        return request_id, token

    def record(self, events: Sequence[Any]) -> list[dict[str, Any]]:
        """One result per event, in order: `{"index", "status": 200 | 422, "error": {"code", "message"} | None}`.
        Every event answered 200 is on disk when this returns."""
        if not 1 <= len(events) <= EVENTS_MAX:
            raise ValidationError(f"events: between 1 and {EVENTS_MAX} events per request, got {len(events)}")
        now = self._clock()
        results: list[dict[str, Any]] = []
        accepted: list[Event] = []
        for index, raw in enumerate(events):
            try:
                accepted.append(self._check(raw, now))
                results.append({"index": index, "status": 200, "error": None})
            except LookalikeError as err:
                results.append({"index": index, "status": err.status, "error": ErrorDetail.of(err).model_dump()})
        self.log.append(accepted)
        return results

    def _check(self, raw: Any, now: float) -> Event:
        try:
            event = EventIn.model_validate(raw)
        except pydantic.ValidationError as err:
            raise ValidationError(validation_message(err.errors(), whole="event")) from None
        claims = self.tokens.verify(event.attribution_token, event.item_id, event.position, now=now)
        ts = now if event.ts is None else event.ts
        if not math.isfinite(ts) or not claims.issued_at - CLOCK_SKEW_S <= ts <= now + CLOCK_SKEW_S:
            raise ValidationError("ts: must lie between the answer's time and now")
        return Event(
            event.type, claims.request_id, claims.experiment, claims.variant, claims.unit_id, claims.query_item, ts,
            item_id=event.item_id, position=event.position,
        )  # fmt: skip
