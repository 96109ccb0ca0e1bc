"""The experiment registry over the JSON-file MetaStore: one running experiment, 409 on design changes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from app.core.errors import ExperimentConflict, ExperimentNotFound, ValidationError
from app.experiments.definitions import parse_spec
from app.experiments.registry import ExperimentRegistry, FileMetaStore

BODY = {
    "unit": "user",
    "variants": [
        {"name": "control", "model_version": "v1", "weight": 50},
        {"name": "treatment", "model_version": "v2", "weight": 50},
    ],
}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture
def registry(tmp_path) -> ExperimentRegistry:
    return ExperimentRegistry(FileMetaStore(tmp_path / "meta"), "items", clock=Clock())


def test_file_meta_store_round_trips_and_leaves_no_temporary_files(tmp_path) -> None:
    store = FileMetaStore(tmp_path)
    assert store.get_meta("experiments/items") is None
    store.put_meta("experiments/items", {"a": [1, 2]})
    store.put_meta("experiments/items", {"a": [3]})
    assert store.get_meta("experiments/items") == {"a": [3]}
    assert [p.name for p in tmp_path.iterdir()] == ["experiments%2Fitems.json"]


def test_put_creates_then_repeats_idempotently(registry: ExperimentRegistry) -> None:
    created, was_created = registry.put("exp1", parse_spec(BODY))
    assert was_created and created.state == "running"
    again, was_created = registry.put("exp1", parse_spec(BODY))
    assert not was_created and again == created
    assert registry.get("exp1") == created
    assert registry.running() == created
    assert registry.experiments() == [created]


def test_every_replica_and_restart_sees_the_same_experiments(tmp_path) -> None:
    first = ExperimentRegistry(FileMetaStore(tmp_path))
    created, _ = first.put("exp1", parse_spec(BODY))
    second = ExperimentRegistry(FileMetaStore(tmp_path))
    assert second.get("exp1") == created
    second.stop("exp1")
    assert first.get("exp1").state == "stopped"


@pytest.mark.parametrize(
    "change",
    [
        {"variants": [BODY["variants"][0], dict(BODY["variants"][1], weight=60)]},
        {"variants": [BODY["variants"][0], dict(BODY["variants"][1], model_version="v3")]},
        {"unit": "session"},
        {"shadow": True},
    ],
)
def test_changing_a_running_experiment_is_a_conflict(registry: ExperimentRegistry, change: dict) -> None:
    created, _ = registry.put("exp1", parse_spec(BODY))
    with pytest.raises(ExperimentConflict) as err:
        registry.put("exp1", parse_spec(BODY | change))
    assert err.value.status == 409 and err.value.code == "experiment_conflict"
    assert registry.get("exp1") == created  # nothing changed


def test_only_one_experiment_runs_at_a_time(registry: ExperimentRegistry) -> None:
    registry.put("exp1", parse_spec(BODY))
    with pytest.raises(ExperimentConflict, match="exp1"):
        registry.put("exp2", parse_spec(BODY))
    with pytest.raises(ExperimentNotFound):
        registry.get("exp2")
    stopped = registry.stop("exp1")
    assert stopped.state == "stopped" and stopped.stopped_at > stopped.started_at
    assert registry.stop("exp1") == stopped  # stopping twice changes nothing
    assert registry.running() is None
    registry.put("exp2", parse_spec(BODY))
    assert registry.running().name == "exp2"
    assert [e.name for e in registry.experiments()] == ["exp1", "exp2"]


def test_a_stopped_experiment_keeps_its_design(registry: ExperimentRegistry) -> None:
    registry.put("exp1", parse_spec(BODY))
    stopped = registry.stop("exp1")
    assert registry.put("exp1", parse_spec(BODY)) == (stopped, False)
    with pytest.raises(ExperimentConflict):
        registry.put("exp1", parse_spec(BODY | {"unit": "session"}))


def test_unknown_experiments_are_not_found(registry: ExperimentRegistry) -> None:
    for call in (registry.get, registry.stop):
        with pytest.raises(ExperimentNotFound) as err:
            call("missing")
        assert err.value.status == 404 and err.value.code == "experiment_not_found"


def test_model_versions_must_exist_and_be_covered(tmp_path) -> None:
    versions = {"v1": True, "v2": "covers 40 of 100 items"}
    registry = ExperimentRegistry(FileMetaStore(tmp_path), version_check=lambda v: versions.get(v, False))
    with pytest.raises(ExperimentConflict, match="v2: covers 40 of 100 items"):
        registry.put("exp1", parse_spec(BODY))
    body = BODY | {"variants": [BODY["variants"][0], dict(BODY["variants"][1], model_version="v9")]}
    with pytest.raises(ExperimentConflict, match="v9: missing or not fully covered"):
        registry.put("exp1", parse_spec(body))
    assert registry.experiments() == []
    versions["v2"] = True
    assert registry.put("exp1", parse_spec(BODY))[1]


def test_collections_have_separate_experiments(tmp_path) -> None:
    store = FileMetaStore(tmp_path)
    ExperimentRegistry(store, "items").put("exp1", parse_spec(BODY))
    other = ExperimentRegistry(store, "other")
    assert other.running() is None
    other.put("exp2", parse_spec(BODY))  # one running per collection
    stored = json.loads((tmp_path / "experiments%2Fitems.json").read_text())
    assert list(stored["experiments"]) == ["exp1"]


def test_the_experiments_file_is_applied_idempotently(registry: ExperimentRegistry) -> None:
    applied = registry.apply([("exp1", parse_spec(BODY))])
    assert registry.apply([("exp1", parse_spec(BODY))]) == applied


def test_a_bad_name_is_a_validation_error(registry: ExperimentRegistry) -> None:
    for name in ("", "a b", "x" * 65, "../etc"):
        with pytest.raises(ValidationError) as err:
            registry.put(name, parse_spec(BODY))
        assert err.value.status == 422
    assert registry.experiments() == []
