"""The experiment report: de-duplication, denominators, per-unit (delta-method) intervals checked against an
independent numpy computation, lift, SRM, CTR by position and over time, shadow overlap, and rendering."""

from __future__ import annotations

import base64
import json
import math
import re
from datetime import UTC, datetime

import duckdb
import numpy as np
import pytest

from app.experiments.definitions import Experiment, parse_spec
from app.experiments.event_log import Event, EventLog
from app.experiments.report import build_report, render, report_from_log

T0 = 1_790_000_000.0
BODY = {
    "unit": "user",
    "variants": [
        {"name": "control", "model_version": "v1", "weight": 50},
        {"name": "treatment", "model_version": "v2", "weight": 50},
    ],
}


def experiment(**change) -> Experiment:
    return Experiment.start("exp", parse_spec(BODY | change), datetime.fromtimestamp(T0, UTC))


def answer(rid: str, variant: str, unit: str, shown=("a", "b", "c"), ts: float = T0, **extra) -> Event:
    return Event("served", rid, "exp", variant, unit, "q", ts, shown=tuple(shown), **extra)


def act(kind: str, rid: str, variant: str, unit: str, item: str, position: int, ts: float = T0) -> Event:
    return Event(kind, rid, "exp", variant, unit, "q", ts + 1, item_id=item, position=position)


def report_of(tmp_path, events: list[Event], exp: Experiment | None = None) -> dict:
    log = EventLog(tmp_path, "r1")
    log.append(events)
    return report_from_log(exp or experiment(), tmp_path)


def by_name(report: dict) -> dict[str, dict]:
    return {v["name"]: v for v in report["variants"]}


def test_counts_deduplicate_and_ignore_other_experiments(tmp_path) -> None:
    events = [
        answer("r1", "control", "u1"),
        answer("r1", "control", "u1"),  # the same answer logged twice
        act("impression", "r1", "control", "u1", "a", 1),
        act("impression", "r1", "control", "u1", "b", 2),
        act("click", "r1", "control", "u1", "b", 2),
        act("click", "r1", "control", "u1", "b", 2),  # a retried POST /events
        act("purchase", "r1", "control", "u1", "b", 2),
        answer("r2", "treatment", "u2"),
        act("impression", "r2", "treatment", "u2", "a", 1),
        Event("click", "r9", "other", "control", "u1", "q", T0, item_id="a", position=1),
    ]
    report = report_of(tmp_path, events)
    assert report["experiment"] == "exp" and report["unit"] == "user" and report["denominator"] == "impressions"
    assert report["started_at"] == datetime.fromtimestamp(T0, UTC).isoformat()
    control, treatment = by_name(report)["control"], by_name(report)["treatment"]
    counts = ("units", "served", "impressions", "clicks", "purchases")
    assert [control[k] for k in counts] == [1, 1, 2, 1, 1]
    assert [treatment[k] for k in counts] == [1, 1, 1, 0, 0]
    assert control["ctr"]["value"] == 0.5 and control["conversion"]["value"] == 0.5
    assert control["model_version"] == "v1" and treatment["model_version"] == "v2"
    assert control["lift"] is None
    assert treatment["lift"]["ctr"]["value"] == -1.0 and treatment["lift"]["ctr"]["ci"] is None


def test_without_impressions_the_served_items_are_the_denominator(tmp_path) -> None:
    events = [
        answer("r1", "control", "u1", shown=("a", "b", "c", "d")),
        act("click", "r1", "control", "u1", "a", 1),
        answer("r2", "treatment", "u2", shown=("a", "b")),
        act("click", "r2", "treatment", "u2", "b", 2),
    ]
    report = report_of(tmp_path, events)
    assert report["denominator"] == "served"
    assert by_name(report)["control"]["ctr"]["value"] == 0.25
    assert by_name(report)["treatment"]["ctr"]["value"] == 0.5
    assert by_name(report)["treatment"]["lift"]["ctr"]["value"] == pytest.approx(1.0)
    positions = report["ctr_by_position"]
    assert [(p["position"], p["denominator"], p["clicks"]) for p in positions["control"]] == [
        (1, 1, 1), (2, 1, 0), (3, 1, 0), (4, 1, 0),
    ]  # fmt: skip
    assert [(p["position"], p["denominator"], p["clicks"]) for p in positions["treatment"]] == [(1, 1, 0), (2, 1, 1)]


def delta_ci(clicks: np.ndarray, n: np.ndarray) -> tuple[float, float, float]:
    """Independent reference: the ratio of per-unit sums and its delta-method 95% interval."""
    r = clicks.sum() / n.sum()
    cov = np.cov(np.vstack([clicks, n]), ddof=1)
    var = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (len(n) * n.mean() ** 2)
    return r, r - 1.959964 * math.sqrt(var), r + 1.959964 * math.sqrt(var)


def test_intervals_are_per_unit_delta_method_and_lift_uses_the_log_ratio() -> None:
    rng = np.random.default_rng(7)
    con = duckdb.connect()
    rows = []
    per_unit: dict[str, tuple[list[int], list[int]]] = {"control": ([], []), "treatment": ([], [])}
    for u in range(300):
        variant = "control" if u % 2 else "treatment"
        n_imp, rate = int(rng.integers(1, 40)), rng.uniform(0.0, 0.3)
        n_clk = int(rng.binomial(n_imp, rate))
        per_unit[variant][0].append(n_clk)
        per_unit[variant][1].append(n_imp)
        rid = f"{u:024x}"
        rows.append(("served", rid, variant, f"u{u}", None, None))
        rows += [("impression", rid, variant, f"u{u}", f"i{i}", i + 1) for i in range(n_imp)]
        rows += [("click", rid, variant, f"u{u}", f"i{i}", i + 1) for i in range(n_clk)]
    columns = ("type", "rid", "variant", "unit", "item", "pos")
    frame = {k: np.array(col, dtype=object) for k, col in zip(columns, zip(*rows, strict=True), strict=True)}  # noqa: F841
    con.execute(
        "CREATE TABLE events AS SELECT type::VARCHAR AS type, rid::VARCHAR AS request_id, 'exp' AS experiment,"
        " variant::VARCHAR AS variant, unit::VARCHAR AS unit, 'q' AS query_item, item::VARCHAR AS item_id,"
        " pos::INTEGER AS position, NULL::VARCHAR[] AS shown, NULL::VARCHAR AS shadow_variant,"
        " NULL::VARCHAR[] AS shadow_shown, 0.0 AS ts, 'r' AS replica FROM frame"
    )
    report = build_report(experiment(), con)
    ref = {}
    for variant, (clicks, n) in per_unit.items():
        got = by_name(report)[variant]["ctr"]
        ref[variant] = delta_ci(np.array(clicks, float), np.array(n, float))
        assert got["value"] == pytest.approx(ref[variant][0])
        assert got["ci"] == pytest.approx(list(ref[variant][1:]), rel=1e-6)
    rc, rt = ref["control"][0], ref["treatment"][0]
    se_c, se_t = ((ref[v][2] - ref[v][0]) / 1.959964 for v in ("control", "treatment"))
    se_log = math.sqrt((se_c / rc) ** 2 + (se_t / rt) ** 2)
    lift = by_name(report)["treatment"]["lift"]["ctr"]
    assert lift["value"] == pytest.approx(rt / rc - 1)
    assert lift["ci"] == pytest.approx([rt / rc * math.exp(-1.959964 * se_log) - 1,
                                        rt / rc * math.exp(1.959964 * se_log) - 1], rel=1e-5)  # fmt: skip


def test_srm_is_a_chi_square_test_of_units_against_the_weights(tmp_path) -> None:
    events = [answer(f"c{i}", "control", f"uc{i}") for i in range(600)]
    events += [answer(f"t{i}", "treatment", f"ut{i}") for i in range(400)]
    report = report_of(tmp_path, events)
    stat = (600 - 500) ** 2 / 500 + (400 - 500) ** 2 / 500  # one degree of freedom
    assert report["srm"]["p_value"] == pytest.approx(math.erfc(math.sqrt(stat / 2)))
    assert report["srm"]["mismatch"] is True
    weighted = experiment(variants=[dict(BODY["variants"][0], weight=60), dict(BODY["variants"][1], weight=40)])
    assert report_from_log(weighted, tmp_path)["srm"] == {"p_value": pytest.approx(1.0), "mismatch": False}


def test_an_experiment_without_events_reports_zeros(tmp_path) -> None:
    report = report_from_log(experiment(), tmp_path)
    assert [v["units"] for v in report["variants"]] == [0, 0]
    assert report["variants"][0]["ctr"] == {"value": None, "ci": None}
    assert report["srm"] == {"p_value": None, "mismatch": False}
    assert "<img" in render(report, "html") and "control" in render(report, "table")


def test_ctr_over_time_buckets_by_the_span(tmp_path) -> None:
    events = []
    for h in range(6):
        rid = f"{h:024x}"
        ts = T0 + h * 3600
        events += [answer(rid, "control", "u1", ts=ts), act("impression", rid, "control", "u1", "a", 1, ts=ts)]
        events += [act("click", rid, "control", "u1", "a", 1, ts=ts)] * (h % 2)
    over_time = report_of(tmp_path, events)["ctr_over_time"]
    assert over_time["bucket_s"] == 900  # 5 h / 48 buckets -> 15 min
    assert [p["ctr"] for p in over_time["variants"]["control"]] == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert over_time["variants"]["treatment"] == []


def test_shadow_mode_reports_overlap_and_rank_changes(tmp_path) -> None:
    exp = experiment(shadow=True)
    events = [
        answer("r1", "control", "u1", shown=("a", "b", "c", "d"), shadow_variant="treatment",
               shadow_shown=("b", "a", "c", "x")),
        answer("r2", "control", "u2", shown=("a", "b", "c", "d"), shadow_variant="treatment",
               shadow_shown=("a", "b", "c", "d")),
    ]  # fmt: skip
    [shadow] = report_of(tmp_path, events, exp)["shadow"]
    assert shadow["variant"] == "treatment" and shadow["answers"] == 2 and shadow["k"] == 4
    assert shadow["overlap_at_k"] == pytest.approx((3 / 4 + 1) / 2)
    assert shadow["mean_abs_rank_change"] == pytest.approx(2 / 7)  # of the 7 items in both lists, a and b moved by 1


def test_renderings(tmp_path) -> None:
    events = [answer("r1", "control", "u1"), act("impression", "r1", "control", "u1", "a", 1)]
    events += [answer("r2", "treatment", "u2"), act("impression", "r2", "treatment", "u2", "a", 1)]
    events += [act("click", "r2", "treatment", "u2", "a", 1)]
    report = report_of(tmp_path, events)
    assert json.loads(render(report, "json")) == json.loads(json.dumps(report))
    table = render(report, "table")
    assert re.search(r"^treatment\s+v2\s+1\s+1\s+1\s+1\s+0\s+100\.00%", table, re.M)
    assert "SRM: p = 1 -> ok" in table
    page = render(report, "html")
    png = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page).group(1)
    assert base64.b64decode(png).startswith(b"\x89PNG\r\n\x1a\n")
    assert "<td>treatment</td><td>v2</td>" in page and "http" not in page.replace("http-equiv", "")
    with pytest.raises(ValueError):
        render(report, "pdf")  # type: ignore[arg-type]
