"""A/B statistics checked by simulation, offline against app/experiments (no HTTP).

    python -m bench.ab_simulate [--users 20000] [--seed 1] [--aa-runs 40] [--format table|json|html]

N users (or sessions as units), each with 1-4 sessions of 1-3 answers of k = 10 items; every shown item gets
an impression and is clicked with probability 4% at position 1, x0.85 per further position, times a per-user
propensity (gamma, mean 1: some users click far more, which is why intervals must be per unit), x1.5 for the
treatment; a clicked item is bought with a probability that makes treatment conversion +14%. Assignment is the
real `assign()`. Checks printed: the CTR lift CI contains +50% and excludes 0; an A/A run's CI contains 0;
false positives among repeated A/A runs; SRM flagged when 10% of the treatment's units are dropped; and the
full path (tokens issued, events verified, written to the durable log, report from the log) on a small run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import numpy as np

from app.core.errors import InvalidToken, TokenExpired
from app.experiments.assignment import assign
from app.experiments.definitions import Experiment, ExperimentSpec
from app.experiments.event_log import Event, EventLog
from app.experiments.report import build_report, render, report_from_log
from app.experiments.tokens import AttributionTokens, new_request_id

K = 10
BASE_CTR = 0.04
DECAY = 0.85
PURCHASE_GIVEN_CLICK = 0.10
START_TS = 1_780_000_000.0  # a fixed start, so runs are reproducible


def experiment(name: str = "sim", unit: str = "user", weights: tuple[int, int] = (50, 50)) -> Experiment:
    spec = ExperimentSpec(
        unit=unit,
        variants=[
            {"name": "control", "model_version": "v1", "weight": weights[0]},
            {"name": "treatment", "model_version": "v2", "weight": weights[1]},
        ],
    )
    return Experiment.start(name, spec, datetime.fromtimestamp(START_TS, UTC))


@dataclass
class Simulation:
    """Answers (one row per served list) and impressions (one row per shown item), as numpy columns."""

    answer_unit: np.ndarray  # int: unit index
    answer_variant: np.ndarray  # int: 0 = control, 1 = treatment
    answer_ts: np.ndarray
    imp_answer: np.ndarray  # int: answer index
    imp_position: np.ndarray  # 1..K
    clicked: np.ndarray  # bool
    purchased: np.ndarray  # bool


def simulate(
    exp: Experiment,
    n_units: int,
    seed: int,
    *,
    ctr_lift: float = 0.5,
    conversion_lift: float = 0.14,
    drop_treatment_fraction: float = 0.0,
) -> Simulation:
    rng = np.random.default_rng(seed)
    names = [v.name for v in exp.variants]
    unit_variant = np.array([names.index(assign(exp, f"u{seed}-{i}").name) for i in range(n_units)])
    keep = np.ones(n_units, dtype=bool)
    if drop_treatment_fraction:  # lose some treatment units entirely (a logging bug SRM must catch)
        treated = np.flatnonzero(unit_variant == 1)
        keep[rng.choice(treated, int(len(treated) * drop_treatment_fraction), replace=False)] = False
    propensity = rng.gamma(shape=2.0, scale=0.5, size=n_units)  # mean 1
    answers_per_unit = (rng.integers(1, 5, n_units) * rng.integers(1, 4, n_units)) * keep
    answer_unit = np.repeat(np.arange(n_units), answers_per_unit)
    answer_variant = unit_variant[answer_unit]
    answer_ts = START_TS + rng.uniform(0, 3 * 86400, len(answer_unit))

    imp_answer = np.repeat(np.arange(len(answer_unit)), K)
    imp_position = np.tile(np.arange(1, K + 1), len(answer_unit))
    treated = answer_variant[imp_answer] == 1
    p_click = BASE_CTR * DECAY ** (imp_position - 1) * propensity[answer_unit[imp_answer]]
    p_click = np.where(treated, p_click * (1 + ctr_lift), p_click)
    clicked = rng.random(len(imp_answer)) < np.minimum(p_click, 1.0)
    # conversion per impression = P(click) * P(buy | click); the treatment's is (1 + conversion_lift) x control's
    p_buy = np.where(treated, PURCHASE_GIVEN_CLICK * (1 + conversion_lift) / (1 + ctr_lift), PURCHASE_GIVEN_CLICK)
    purchased = clicked & (rng.random(len(imp_answer)) < p_buy)
    return Simulation(answer_unit, answer_variant, answer_ts, imp_answer, imp_position, clicked, purchased)


def load(con: duckdb.DuckDBPyConnection, exp: Experiment, sim: Simulation, table: str = "events") -> None:
    """The simulation as event rows (event_log.COLUMNS) in an in-memory table: one served row per answer, one
    impression per shown item, a click and a purchase where they happened."""
    names = np.array([v.name for v in exp.variants])
    answers = {  # noqa: F841 - read by DuckDB by name
        "req": np.arange(len(sim.answer_unit)),
        "unit": sim.answer_unit,
        "variant": names[sim.answer_variant],
        "ts": sim.answer_ts,
    }
    impressions = {  # noqa: F841 - read by DuckDB by name
        "req": sim.imp_answer,
        "position": sim.imp_position,
        "clicked": sim.clicked,
        "purchased": sim.purchased,
    }
    con.execute(
        f"""
        CREATE OR REPLACE TABLE {table} AS
        WITH a AS (SELECT * FROM answers),
        i AS (SELECT i.*, a.unit, a.variant, a.ts FROM impressions i JOIN a USING (req)),
        acts AS (
            SELECT 'impression' AS type, * FROM i
            UNION ALL SELECT 'click', * FROM i WHERE clicked
            UNION ALL SELECT 'purchase', * FROM i WHERE purchased
        )
        SELECT 'served' AS type, req::VARCHAR AS request_id, $1 AS experiment, variant, 'u' || unit AS unit,
               'q' AS query_item, NULL::VARCHAR AS item_id, NULL::INTEGER AS position,
               NULL::VARCHAR[] AS shown, NULL::VARCHAR AS shadow_variant, NULL::VARCHAR[] AS shadow_shown, ts,
               'sim' AS replica
        FROM a
        UNION ALL
        SELECT type, req::VARCHAR, $1, variant, 'u' || unit, 'q', 'item' || (req * 7 + position) % 100003,
               position::INTEGER, NULL, NULL, NULL, ts + position, 'sim'
        FROM acts
        """,
        [exp.name],
    )


def run_report(exp: Experiment, sim: Simulation) -> dict:
    con = duckdb.connect()
    try:
        load(con, exp, sim)
        return build_report(exp, con)
    finally:
        con.close()


def ci_contains(ci: list[float] | None, x: float) -> bool:
    return ci is not None and ci[0] <= x <= ci[1]


def aa_false_positives(n_units: int, runs: int, seed: int = 1000) -> int:
    """How many of `runs` A/A runs (no true difference) have a CTR lift CI that excludes 0."""
    positives = 0
    for run in range(runs):
        exp = experiment(f"aa-{run}")
        report = run_report(exp, simulate(exp, n_units, seed + run, ctr_lift=0.0, conversion_lift=0.0))
        positives += not ci_contains(report["variants"][1]["lift"]["ctr"]["ci"], 0.0)
    return positives


def full_path(n_units: int, seed: int, root: str) -> tuple[dict, dict[str, int]]:
    """Tokens issued per answer, every event verified as POST /events would, appended to the durable log in
    batches of 100, the report read back from the log; plus forged and expired tokens, which must be refused."""
    exp = experiment("full")
    sim = simulate(exp, n_units, seed)
    tokens = AttributionTokens("simulation-secret-0123456789", max_age_s=3600)
    log = EventLog(root, "replica-a")
    names = [v.name for v in exp.variants]
    refused = {"forged": 0, "expired": 0}
    batch: list[Event] = []
    imp_by_answer = np.split(np.arange(len(sim.imp_answer)), np.arange(K, len(sim.imp_answer), K))
    for a, imps in enumerate(imp_by_answer):
        unit, variant, ts = f"u{sim.answer_unit[a]}", names[sim.answer_variant[a]], float(sim.answer_ts[a])
        rid = new_request_id()
        shown = [f"item{(a * 7 + p) % 100003}" for p in range(1, K + 1)]
        token = tokens.issue(
            request_id=rid, experiment=exp.name, variant=variant, unit_id=unit, query_item="q", shown=shown,
            issued_at=ts,
        )  # fmt: skip
        batch.append(Event("served", rid, exp.name, variant, unit, "q", ts, shown=tuple(shown)))
        for i in imps:
            position = int(sim.imp_position[i])
            kinds = ["impression"] + ["click"] * bool(sim.clicked[i]) + ["purchase"] * bool(sim.purchased[i])
            for kind in kinds:
                claims = tokens.verify(token, shown[position - 1], position, now=ts + 60)
                batch.append(
                    Event(kind, claims.request_id, claims.experiment, claims.variant, claims.unit_id,
                          claims.query_item, ts + position, item_id=shown[position - 1], position=position)
                )  # fmt: skip
        if len(batch) >= 100:
            log.append(batch)
            batch = []
        if a % 50 == 0:  # a forged token (one byte flipped) and an expired one
            forged = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
            try:
                tokens.verify(forged, shown[0], 1, now=ts + 60)
            except InvalidToken:
                refused["forged"] += 1
            try:
                tokens.verify(token, shown[0], 1, now=ts + 7200)
            except TokenExpired:
                refused["expired"] += 1
    log.append(batch)
    log.close()
    return report_from_log(exp, root), refused


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--aa-runs", type=int, default=40)
    parser.add_argument("--aa-users", type=int, default=3_000)
    parser.add_argument("--full-users", type=int, default=500)
    parser.add_argument("--format", choices=("table", "json", "html"), default="table")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    exp = experiment()
    ab = run_report(exp, simulate(exp, args.users, args.seed))
    print(render(ab, args.format))
    lift = ab["variants"][1]["lift"]["ctr"]
    conv = ab["variants"][1]["lift"]["conversion"]
    checks = {
        "A/B: CTR lift CI contains +50%": ci_contains(lift["ci"], 0.5),
        "A/B: CTR lift CI excludes 0": not ci_contains(lift["ci"], 0.0),
        "A/B: conversion lift CI contains +14%": ci_contains(conv["ci"], 0.14),
        "A/B: no SRM": not ab["srm"]["mismatch"],
    }
    aa_exp = experiment("aa")
    aa = run_report(aa_exp, simulate(aa_exp, args.users, args.seed + 1, ctr_lift=0.0, conversion_lift=0.0))
    checks["A/A: CTR lift CI contains 0"] = ci_contains(aa["variants"][1]["lift"]["ctr"]["ci"], 0.0)
    fp = aa_false_positives(args.aa_users, args.aa_runs)
    checks[f"A/A x{args.aa_runs}: {fp} false positives <= {round(0.15 * args.aa_runs)}"] = fp <= 0.15 * args.aa_runs
    srm_exp = experiment("srm")
    srm = run_report(srm_exp, simulate(srm_exp, args.users, args.seed + 2, drop_treatment_fraction=0.1))
    checks[f"SRM flagged with 10% of treatment units dropped (p = {srm['srm']['p_value']:.2g})"] = srm["srm"][
        "mismatch"
    ]
    with tempfile.TemporaryDirectory() as root:
        full, refused = full_path(args.full_users, args.seed + 3, root)
    checks[f"full path: {full['variants'][0]['served'] + full['variants'][1]['served']} answers via tokens + log"] = (
        full["variants"][1]["lift"]["ctr"]["value"] is not None
    )
    checks[f"forged tokens refused ({refused['forged']})"] = refused["forged"] > 0
    checks[f"expired tokens refused ({refused['expired']})"] = refused["expired"] > 0
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}", file=sys.stderr)
    print(f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
