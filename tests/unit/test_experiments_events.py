"""EventRecorder: served answers logged with their token; POST /events batches checked event by event,
accepted ones durable, the rest answered 422 with their code; a repeated event counts once in the report."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.core.errors import ValidationError
from app.experiments.definitions import Experiment, parse_spec
from app.experiments.event_log import EventLog
from app.experiments.events import EventRecorder
from app.experiments.report import report_from_log
from app.experiments.tokens import AttributionTokens

NOW = 1_790_000_000.0
SHOWN = ["a", "b", "c"]


class Clock:
    now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def recorder(tmp_path: Path, clock: Clock) -> EventRecorder:
    tokens = AttributionTokens("an-events-secret-0123456789", max_age_s=3600)
    return EventRecorder(tokens, EventLog(tmp_path, "r1"), clock=clock)


def serve(recorder: EventRecorder, variant: str = "treatment") -> str:
    _, token = recorder.served(experiment="exp", variant=variant, unit_id="u1", query_item="q", shown=SHOWN)
    return token


def codes(results: list[dict]) -> list[str | None]:
    return [r["error"] and r["error"]["code"] for r in results]


def test_events_are_checked_one_by_one_and_the_good_ones_stored(
    recorder: EventRecorder, clock: Clock, tmp_path: Path
) -> None:
    token = serve(recorder)
    other = serve(recorder, "control")
    clock.now += 10
    results = recorder.record(
        [
            {"type": "impression", "attribution_token": token, "item_id": "a", "position": 1},
            {"type": "click", "attribution_token": token, "item_id": "b", "position": 2, "ts": NOW + 5},
            {"type": "click", "attribution_token": token, "item_id": "b", "position": 2},  # a repeat
            {"type": "click", "attribution_token": token, "item_id": "z", "position": 1},
            {"type": "click", "attribution_token": token[:-3] + "AAA", "item_id": "a", "position": 1},
            {"type": "like", "attribution_token": token, "item_id": "a", "position": 1},
            {"type": "click", "attribution_token": token, "item_id": "a", "position": 1, "ts": NOW - 9999},
            "not an object",
            {"type": "purchase", "attribution_token": other, "item_id": "c", "position": 3},
        ]
    )
    assert [r["index"] for r in results] == list(range(9))
    assert [r["status"] for r in results] == [200, 200, 200, 422, 422, 422, 422, 422, 200]
    assert codes(results) == [None, None, None, "item_not_shown", "invalid_token", "validation_error",
                              "validation_error", "validation_error", None]  # fmt: skip
    exp = Experiment.start("exp", parse_spec({"unit": "user", "variants": [
        {"name": "control", "model_version": "v1", "weight": 1},
        {"name": "treatment", "model_version": "v2", "weight": 1},
    ]}), datetime.fromtimestamp(NOW, UTC))  # fmt: skip
    report = report_from_log(exp, tmp_path)
    control, treatment = report["variants"]
    assert (treatment["served"], treatment["impressions"], treatment["clicks"]) == (1, 1, 1)
    assert (control["served"], control["purchases"]) == (1, 1)


def test_expired_tokens_are_refused(recorder: EventRecorder, clock: Clock) -> None:
    token = serve(recorder)
    clock.now += 3601
    [result] = recorder.record([{"type": "click", "attribution_token": token, "item_id": "a", "position": 1}])
    assert result["status"] == 422 and result["error"]["code"] == "token_expired"


def test_batch_size_is_bounded(recorder: EventRecorder) -> None:
    with pytest.raises(ValidationError):
        recorder.record([])
    token = serve(recorder)
    event = {"type": "impression", "attribution_token": token, "item_id": "a", "position": 1}
    assert len(recorder.record([event] * 1000)) == 1000
    with pytest.raises(ValidationError):
        recorder.record([event] * 1001)


def test_shadow_answers_log_both_lists(recorder: EventRecorder, tmp_path: Path) -> None:
    import duckdb

    from app.experiments.event_log import create_events_view

    recorder.served(experiment="exp", variant="control", unit_id="u1", query_item="q", shown=SHOWN,
                    shadow_variant="treatment", shadow_shown=["c", "a", "x"])  # fmt: skip
    con = duckdb.connect()
    create_events_view(con, tmp_path)
    row = con.execute("SELECT variant, shown, shadow_variant, shadow_shown FROM events").fetchall()
    assert row == [("control", SHOWN, "treatment", ["c", "a", "x"])]
