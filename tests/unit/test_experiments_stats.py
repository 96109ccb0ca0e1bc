"""The report's statistics, proven by seeded simulation (bench/ab_simulate.py) through the real assignment,
SQL and intervals: a true +50% CTR lift is found and covered, A/A runs are mostly (95%) covered, SRM is caught."""

from __future__ import annotations

import pytest

from bench.ab_simulate import aa_false_positives, ci_contains, experiment, full_path, run_report, simulate


@pytest.fixture(scope="module")
def ab() -> dict:
    exp = experiment("ab")
    return run_report(exp, simulate(exp, 10_000, seed=1))


def test_a_true_50_percent_ctr_lift_is_covered_and_significant(ab: dict) -> None:
    control, treatment = ab["variants"]
    assert control["lift"] is None
    lift = treatment["lift"]["ctr"]
    assert ci_contains(lift["ci"], 0.5) and not ci_contains(lift["ci"], 0.0)
    assert ci_contains(treatment["lift"]["conversion"]["ci"], 0.14)
    assert not ab["srm"]["mismatch"]
    # CTR at position 1 is about the simulated 4% (control) and 6% (treatment), and falls with position
    first = {name: rows[0]["ctr"] for name, rows in ab["ctr_by_position"].items()}
    assert 0.035 < first["control"] < 0.045 and 0.054 < first["treatment"] < 0.066
    assert ab["ctr_by_position"]["control"][-1]["ctr"] < first["control"] / 2


def test_an_aa_run_covers_zero() -> None:
    exp = experiment("aa")
    report = run_report(exp, simulate(exp, 10_000, seed=2, ctr_lift=0.0, conversion_lift=0.0))
    assert ci_contains(report["variants"][1]["lift"]["ctr"]["ci"], 0.0)
    assert ci_contains(report["variants"][1]["lift"]["conversion"]["ci"], 0.0)


def test_repeated_aa_runs_rarely_claim_a_difference() -> None:
    # 5% expected; at most 6 of 40 (seeded, so deterministic)
    assert aa_false_positives(n_units=2_000, runs=40) <= 6


def test_srm_is_flagged_when_a_tenth_of_one_variants_units_is_lost() -> None:
    exp = experiment("srm")
    report = run_report(exp, simulate(exp, 10_000, seed=3, drop_treatment_fraction=0.1))
    assert report["srm"]["mismatch"] is True and report["srm"]["p_value"] < 0.001


def test_the_full_path_through_tokens_and_the_log_refuses_forgeries(tmp_path) -> None:
    report, refused = full_path(n_units=150, seed=4, root=str(tmp_path))
    assert refused["forged"] > 0 and refused["expired"] > 0 and refused["forged"] == refused["expired"]
    served = sum(v["served"] for v in report["variants"])
    assert served > 0 and sum(v["impressions"] for v in report["variants"]) == 10 * served
    assert sum(v["units"] for v in report["variants"]) <= 150
