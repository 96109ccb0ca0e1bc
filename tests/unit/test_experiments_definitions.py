"""Experiment definitions (validation, same_design, the experiments file) and deterministic assignment."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from app.core.errors import ValidationError
from app.experiments.assignment import assign, bucket, served_variant
from app.experiments.definitions import Experiment, ExperimentSpec, load_experiments_file, parse_spec, same_design

BODY = {
    "unit": "user",
    "variants": [
        {"name": "control", "model_version": "v1", "weight": 50},
        {"name": "treatment", "model_version": "v2", "weight": 50},
    ],
    "shadow": False,
}


def started(name: str = "exp", body: dict | None = None) -> Experiment:
    return Experiment.start(name, parse_spec(body or BODY), datetime(2026, 1, 1, tzinfo=UTC))


def test_a_valid_body_parses_with_the_first_variant_as_control() -> None:
    exp = started()
    assert exp.control.name == "control"
    assert exp.state == "running" and exp.stopped_at is None
    assert exp.effective_salt == "exp"
    assert exp.variant("treatment").model_version == "v2"
    assert exp.variant("nope") is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"unit": "device"}, "unit"),
        ({"variants": BODY["variants"][:1]}, "variants"),
        ({"variants": [BODY["variants"][0]] * 2}, "unique"),
        ({"variants": [dict(BODY["variants"][0], name=f"v{i}") for i in range(9)]}, "variants"),
        ({"variants": [BODY["variants"][0], dict(BODY["variants"][1], weight=0)]}, "weight"),
        ({"variants": [BODY["variants"][0], dict(BODY["variants"][1], weight=2.5)]}, "weight"),
        ({"variants": [BODY["variants"][0], dict(BODY["variants"][1], weight="50")]}, "weight"),
        ({"variants": [BODY["variants"][0], dict(BODY["variants"][1], name="bad name!")]}, "name"),
        ({"variants": [BODY["variants"][0], dict(BODY["variants"][1], extra=1)]}, "extra"),
        ({"variants": [BODY["variants"][0], dict(BODY["variants"][1], model_version="v 2")]}, "model_version"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_bad_bodies_are_refused_with_the_field_named(change: dict, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_spec(BODY | change)
    assert err.value.code == "validation_error"
    assert field in err.value.message


def test_experiment_names_follow_the_pattern() -> None:
    with pytest.raises(ValueError, match="pattern"):
        Experiment.start("has space", parse_spec(BODY))
    assert started("a" * 64).name == "a" * 64
    body = BODY | {"variants": [BODY["variants"][0], dict(BODY["variants"][1], model_version="siglip-fp16-0a1b2c@v2")]}
    assert started(body=body).variants[1].model_version == "siglip-fp16-0a1b2c@v2"


def test_same_design_ignores_nothing_but_repeats() -> None:
    spec = parse_spec(BODY)
    assert same_design(spec, parse_spec(BODY))
    assert same_design(started().spec(), spec)
    reweighted = BODY | {"variants": [BODY["variants"][0], dict(BODY["variants"][1], weight=51)]}
    swapped = BODY | {"variants": BODY["variants"][::-1]}
    for other in (reweighted, swapped, BODY | {"unit": "session"}, BODY | {"shadow": True}, BODY | {"salt": "x"}):
        assert not same_design(spec, parse_spec(other))


def test_assignment_is_deterministic_and_follows_the_weights() -> None:
    exp = started(body=BODY | {"variants": [dict(BODY["variants"][0], weight=1), dict(BODY["variants"][1], weight=3)]})
    again = Experiment.model_validate_json(exp.model_dump_json())  # as another replica reads it back
    units = [f"user-{i}" for i in range(8000)]
    assert [assign(exp, u).name for u in units] == [assign(again, u).name for u in units]
    counts = Counter(assign(exp, u).name for u in units)
    assert 0.23 < counts["control"] / len(units) < 0.27  # weight 1 of 4
    assert all(0 <= bucket(exp, u) < 4 for u in units[:100])


def test_a_different_salt_or_experiment_reshuffles_units() -> None:
    units = [f"user-{i}" for i in range(2000)]
    base = [assign(started("a"), u).name for u in units]
    other_name = [assign(started("b"), u).name for u in units]
    other_salt = [assign(started("a", BODY | {"salt": "s2"}), u).name for u in units]
    for shuffled in (other_name, other_salt):
        agree = sum(x == y for x, y in zip(base, shuffled, strict=True)) / len(units)
        assert 0.4 < agree < 0.6  # independent halves agree about half the time


def test_shadow_mode_serves_the_control() -> None:
    shadow = started(body=BODY | {"shadow": True})
    treatment = shadow.variant("treatment")
    assert served_variant(shadow, treatment).name == "control"
    assert served_variant(started(), treatment).name == "treatment"


def test_experiments_file_is_loaded(tmp_path) -> None:
    path = tmp_path / "experiments.yaml"
    path.write_text(
        "experiments:\n"
        "  - name: siglip-v2\n"
        "    unit: session\n"
        "    variants:\n"
        "      - {name: control, model_version: v1, weight: 90}\n"
        "      - {name: treatment, model_version: v2, weight: 10}\n"
    )
    [(name, spec)] = load_experiments_file(path)
    assert name == "siglip-v2"
    assert spec == ExperimentSpec(unit="session", variants=[
        {"name": "control", "model_version": "v1", "weight": 90},
        {"name": "treatment", "model_version": "v2", "weight": 10},
    ])  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("experiments: [", "cannot read"),
        ("just: text", "'experiments' list"),
        ("experiments:\n  - unit: user", "needs a 'name'"),
        ("experiments:\n  - {name: 'bad name', unit: user, variants: []}", "experiments[0]"),
        ("experiments:\n  - {name: e, unit: user, variants: [{name: c, model_version: v1, weight: 1}]}", "variants"),
    ],
)
def test_a_bad_experiments_file_names_the_problem(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "experiments.yaml"
    path.write_text(text)
    with pytest.raises(ValidationError) as err:
        load_experiments_file(path)
    assert message in err.value.message and str(path) in err.value.message


def test_a_duplicate_name_in_the_file_is_refused(tmp_path) -> None:
    entry = "  - {name: e, unit: user, variants: [{name: c, model_version: v1, weight: 1}, {name: t, model_version: v2, weight: 1}]}\n"  # noqa: E501
    path = tmp_path / "experiments.yaml"
    path.write_text("experiments:\n" + entry + entry)
    with pytest.raises(ValidationError, match="twice"):
        load_experiments_file(path)
