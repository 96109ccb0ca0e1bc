"""The experiment report: DuckDB aggregates over the event log, delta-method intervals, SRM test, rendering.

Counting (all in SQL, one pass over the log): the events of the experiment are grouped per answer (request id)
into one row holding, per type, a 126-bit mask of the positions that got an impression, a click or a purchase.
The token binds each shown item to its position, so (request, type, position) is the (token, item, type) of an
event, and a retried or re-imported event sets the same bit: it counts once. Served answers are one row each
however often they were logged. CTR = clicks / impressions and conversion = purchases / impressions; when the
experiment has no impression events at all, the denominator is the items served instead.

Intervals: a unit (user or session) contributes many impressions that are not independent, so each rate is a
ratio of per-unit sums, R = sum(c_u) / sum(n_u), with the delta-method variance
    Var(R) ~ (Var(c) - 2 R Cov(c, n) + R^2 Var(n)) / (N mean(n)^2)
over the N units (sample variances across units). Lift = R_t / R_c - 1 with its interval from the log ratio,
Var(log R_t - log R_c) ~ Var(R_t)/R_t^2 + Var(R_c)/R_c^2 (independent groups), mapped back with exp.
SRM: chi-square of the units per variant against the weights; mismatch when p < 0.001.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
from scipy.stats import chisquare

from app.experiments.definitions import Experiment
from app.experiments.event_log import read_events

Z95 = 1.959963984540054
SRM_ALPHA = 0.001
MAX_POSITION = 126  # positions 1..126 fit the HUGEINT masks
Format = Literal["json", "table", "html"]
_BUCKETS_S = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
_REQ = "_report_answers"

# One row per answer (request id) of experiment $1.
_ANSWERS = f"""
CREATE OR REPLACE TEMP TABLE {_REQ} AS
SELECT request_id, any_value(variant) AS variant, any_value(unit) AS unit, min(ts) AS ts,
       count(*) FILTER (type = 'served') > 0 AS served,
       coalesce(max(len(shown)) FILTER (type = 'served'), 0) AS n_shown,
       coalesce(max(position) FILTER (type <> 'served'), 0) AS max_pos,
       coalesce(bit_or(1::HUGEINT << position) FILTER (type = 'impression'), 0) AS imp,
       coalesce(bit_or(1::HUGEINT << position) FILTER (type = 'click'), 0) AS clk,
       coalesce(bit_or(1::HUGEINT << position) FILTER (type = 'purchase'), 0) AS pur
FROM {{source}}
WHERE experiment = $1 AND (type = 'served' OR (type IN ('impression', 'click', 'purchase')
                                               AND position BETWEEN 1 AND {MAX_POSITION}))
GROUP BY request_id
"""

# $1: true = impressions are the denominator, false = the items served.
_PER_VARIANT = f"""
WITH per_unit AS (
    SELECT variant, unit, count(*) FILTER (served) AS served, sum(n_shown)::DOUBLE AS shown,
           sum(bit_count(imp))::DOUBLE AS imp, sum(bit_count(clk))::DOUBLE AS clk,
           sum(bit_count(pur))::DOUBLE AS pur
    FROM {_REQ} GROUP BY ALL
),
d AS (SELECT *, CASE WHEN $1 THEN imp ELSE shown END AS n FROM per_unit)
SELECT variant, count(*) AS units, sum(served)::BIGINT AS served, sum(imp)::BIGINT AS impressions,
       sum(clk)::BIGINT AS clicks, sum(pur)::BIGINT AS purchases, sum(n) AS n,
       coalesce(var_samp(n), 0) AS var_n, coalesce(var_samp(clk), 0) AS var_c, coalesce(var_samp(pur), 0) AS var_p,
       coalesce(covar_samp(clk, n), 0) AS cov_cn, coalesce(covar_samp(pur, n), 0) AS cov_pn
FROM d GROUP BY variant
"""

_BY_POSITION = f"""
SELECT variant, p AS position,
       sum(CASE WHEN $1 THEN ((imp >> p) & 1)::INTEGER ELSE (p <= n_shown)::INTEGER END) AS den,
       sum(((clk >> p) & 1)::INTEGER) AS clicks
FROM (SELECT variant, imp, clk, n_shown, unnest(range(1, greatest(max_pos, n_shown) + 1)) AS p FROM {_REQ})
GROUP BY ALL HAVING den > 0 OR clicks > 0 ORDER BY variant, position
"""

# $1: bucket width in seconds, $2 as in _PER_VARIANT
_OVER_TIME = f"""
SELECT variant, (floor(ts / $1) * $1)::BIGINT AS bucket,
       sum(CASE WHEN $2 THEN bit_count(imp) ELSE n_shown END) AS den, sum(bit_count(clk)) AS clicks
FROM {_REQ} GROUP BY ALL ORDER BY bucket
"""

_SHADOW = """
WITH answers AS (
    SELECT request_id, any_value(shadow_variant) AS shadow_variant, any_value(shown) AS shown,
           any_value(shadow_shown) AS shadow_shown
    FROM {source} WHERE experiment = $1 AND type = 'served' AND shadow_shown IS NOT NULL GROUP BY request_id
),
moves AS (
    SELECT shadow_variant, abs(p - list_position(shadow_shown, shown[p])) AS moved
    FROM (SELECT *, unnest(range(1, len(shown) + 1)) AS p FROM answers)
    WHERE list_position(shadow_shown, shown[p]) IS NOT NULL
)
SELECT a.shadow_variant, count(*) AS answers,
       avg(len(list_intersect(a.shown, a.shadow_shown)) / greatest(len(a.shown), 1)) AS overlap,
       avg(len(a.shown)) AS k,
       (SELECT avg(moved) FROM moves m WHERE m.shadow_variant = a.shadow_variant) AS mean_abs_rank_change
FROM answers a GROUP BY a.shadow_variant
"""


def _interval(value: float | None, se: float | None) -> dict[str, Any]:
    if value is None or se is None or not math.isfinite(se):
        return {"value": value, "ci": None}
    return {"value": value, "ci": [max(0.0, value - Z95 * se), value + Z95 * se]}


def _ratio(
    num: float, den: float, units: int, var_c: float, var_n: float, cov: float
) -> tuple[float | None, float | None]:
    """The ratio of per-unit sums and its delta-method standard error (None when undefined)."""
    if den <= 0:
        return None, None
    r = num / den
    if units < 2:
        return r, None
    mean_n = den / units
    var = (var_c - 2 * r * cov + r * r * var_n) / (units * mean_n * mean_n)
    return r, math.sqrt(max(var, 0.0))


def _lift(treat: tuple[float | None, float | None], control: tuple[float | None, float | None]) -> dict[str, Any]:
    (rt, set_), (rc, sec) = treat, control
    if rt is None or rc is None or rc <= 0:
        return {"value": None, "ci": None}
    value = rt / rc - 1
    if rt <= 0 or set_ is None or sec is None:
        return {"value": value, "ci": None}
    se_log = math.sqrt((set_ / rt) ** 2 + (sec / rc) ** 2)
    log_ratio = math.log(rt / rc)
    return {"value": value, "ci": [math.exp(log_ratio - Z95 * se_log) - 1, math.exp(log_ratio + Z95 * se_log) - 1]}


def srm(experiment: Experiment, units: dict[str, int]) -> dict[str, Any]:
    observed = [units.get(v.name, 0) for v in experiment.variants]
    total = sum(observed)
    if total == 0:
        return {"p_value": None, "mismatch": False}
    weights = sum(v.weight for v in experiment.variants)
    expected = [total * v.weight / weights for v in experiment.variants]
    p_value = float(chisquare(observed, expected).pvalue)
    return {"p_value": p_value, "mismatch": p_value < SRM_ALPHA}


def _bucket_seconds(span_s: float) -> int:
    return next((b for b in _BUCKETS_S if span_s / b <= 48), _BUCKETS_S[-1])


def build_report(experiment: Experiment, con: duckdb.DuckDBPyConnection, source: str = "events") -> dict[str, Any]:
    """The report of `experiment` from the events in table or view `source` (event_log.COLUMNS)."""
    con.execute(_ANSWERS.format(source=source), [experiment.name])
    try:
        return _report(experiment, con, source)
    finally:
        con.execute(f"DROP TABLE IF EXISTS {_REQ}")


def _report(experiment: Experiment, con: duckdb.DuckDBPyConnection, source: str) -> dict[str, Any]:
    has_imp = bool(con.execute(f"SELECT coalesce(bool_or(imp <> 0), false) FROM {_REQ}").fetchone()[0])
    rows = con.execute(_PER_VARIANT, [has_imp]).fetchall()
    cols = [d[0] for d in con.description]
    by_variant = {r[0]: dict(zip(cols, r, strict=True)) for r in rows}
    empty = {"units": 0, "served": 0, "impressions": 0, "clicks": 0, "purchases": 0, "n": 0.0}
    empty |= {"var_n": 0.0, "var_c": 0.0, "var_p": 0.0, "cov_cn": 0.0, "cov_pn": 0.0}

    rates: dict[str, dict[str, tuple[float | None, float | None]]] = {}
    variants = []
    for v in experiment.variants:
        s = by_variant.get(v.name, empty)
        ctr = _ratio(s["clicks"], s["n"], s["units"], s["var_c"], s["var_n"], s["cov_cn"])
        conv = _ratio(s["purchases"], s["n"], s["units"], s["var_p"], s["var_n"], s["cov_pn"])
        rates[v.name] = {"ctr": ctr, "conversion": conv}
        variants.append(
            {
                "name": v.name,
                "model_version": v.model_version,
                "units": int(s["units"]),
                "served": int(s["served"]),
                "impressions": int(s["impressions"]),
                "clicks": int(s["clicks"]),
                "purchases": int(s["purchases"]),
                "ctr": _interval(*ctr),
                "conversion": _interval(*conv),
                "lift": None,
            }
        )
    control = rates[experiment.control.name]
    for row in variants[1:]:
        mine = rates[row["name"]]
        row["lift"] = {
            "ctr": _lift(mine["ctr"], control["ctr"]),
            "conversion": _lift(mine["conversion"], control["conversion"]),
        }

    report: dict[str, Any] = {
        "experiment": experiment.name,
        "unit": experiment.unit,
        "state": experiment.state,
        "started_at": experiment.started_at.isoformat(),
        "stopped_at": experiment.stopped_at.isoformat() if experiment.stopped_at else None,
        "denominator": "impressions" if has_imp else "served",
        "variants": variants,
        "srm": srm(experiment, {n: int(s["units"]) for n, s in by_variant.items()}),
        "ctr_by_position": _ctr_by_position(experiment, con, has_imp),
        "ctr_over_time": _ctr_over_time(experiment, con, has_imp),
    }
    if experiment.shadow:
        report["shadow"] = _shadow(con, source, experiment.name)
    return report


def _ctr_by_position(experiment: Experiment, con: duckdb.DuckDBPyConnection, has_imp: bool) -> dict:
    result: dict[str, list[dict[str, Any]]] = {v.name: [] for v in experiment.variants}
    for variant, position, den, clicks in con.execute(_BY_POSITION, [has_imp]).fetchall():
        if variant in result:
            row = {"position": int(position), "denominator": int(den), "clicks": int(clicks)}
            result[variant].append(row | {"ctr": clicks / den if den else None})
    return result


def _ctr_over_time(experiment: Experiment, con: duckdb.DuckDBPyConnection, has_imp: bool) -> dict:
    span = con.execute(f"SELECT max(ts) - min(ts) FROM {_REQ}").fetchone()[0]
    width = _bucket_seconds(span or 0)
    result: dict[str, Any] = {"bucket_s": width, "variants": {v.name: [] for v in experiment.variants}}
    for variant, bucket, den, clicks in con.execute(_OVER_TIME, [width, has_imp]).fetchall():
        if variant in result["variants"]:
            result["variants"][variant].append(
                {
                    "start": datetime.fromtimestamp(bucket, UTC).isoformat(),
                    "denominator": int(den),
                    "clicks": int(clicks),
                    "ctr": clicks / den if den else None,
                }
            )
    return result


def _shadow(con: duckdb.DuckDBPyConnection, source: str, name: str) -> list[dict[str, Any]]:
    rows = con.execute(_SHADOW.format(source=source), [name]).fetchall()
    return [
        {"variant": v, "answers": int(n), "overlap_at_k": overlap, "k": k, "mean_abs_rank_change": moved}
        for v, n, overlap, k, moved in rows
    ]


def report_from_log(experiment: Experiment, root: str | Path) -> dict[str, Any]:
    """build_report over the event log under `root` (every replica's files)."""
    return read_events(root, lambda con: build_report(experiment, con))


# -- rendering ---------------------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _with_ci(metric: dict[str, Any] | None) -> str:
    if not metric or metric["value"] is None:
        return "-"
    ci = metric["ci"]
    return _pct(metric["value"]) + ("" if ci is None else f" [{_pct(ci[0])}, {_pct(ci[1])}]")


_HEADER = (
    "variant",
    "model",
    "units",
    "served",
    "impr.",
    "clicks",
    "purch.",
    "CTR [95% CI]",
    "conv. [95% CI]",
    "CTR lift [95% CI]",
    "conv. lift [95% CI]",
)


def _table_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    for v in report["variants"]:
        lift = v["lift"] or {}
        rows.append(
            (v["name"], v["model_version"], str(v["units"]), str(v["served"]), str(v["impressions"]), str(v["clicks"]),
             str(v["purchases"]), _with_ci(v["ctr"]), _with_ci(v["conversion"]), _with_ci(lift.get("ctr")),
             _with_ci(lift.get("conversion")))
        )  # fmt: skip
    return rows


def _srm_line(report: dict[str, Any]) -> str:
    p = report["srm"]["p_value"]
    verdict = "MISMATCH (p < 0.001): the split is broken, do not trust the lift" if report["srm"]["mismatch"] else "ok"
    return f"SRM: p = {'-' if p is None else f'{p:.4g}'} -> {verdict}"


def render_table(report: dict[str, Any]) -> str:
    rows = [_HEADER, *_table_rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    lines = [
        f"experiment {report['experiment']} ({report['state']}, unit {report['unit']}, since {report['started_at']}, "
        f"CTR per {report['denominator']})"
    ]
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(_srm_line(report))
    lines.append("CTR by position: " + "; ".join(
        f"{name}: " + " ".join(f"{p['position']}={_pct(p['ctr'])}" for p in positions[:10])
        for name, positions in report["ctr_by_position"].items()
    ))  # fmt: skip
    return "\n".join(lines) + "\n"


def ctr_over_time_png(report: dict[str, Any]) -> bytes:
    """A PNG line plot of CTR per variant per time bucket (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.5), dpi=100)
    ax = fig.add_subplot()
    for name, points in report["ctr_over_time"]["variants"].items():
        xs = [datetime.fromisoformat(p["start"]) for p in points if p["ctr"] is not None]
        ys = [100 * p["ctr"] for p in points if p["ctr"] is not None]
        ax.plot(xs, ys, marker="o", markersize=3, label=name)
    ax.set_ylabel("CTR (%)")
    ax.set_title(f"CTR per {report['ctr_over_time']['bucket_s']} s")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def render_html(report: dict[str, Any]) -> str:
    """A self-contained page (works offline): the table, the SRM verdict and the CTR-over-time plot inline."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in _HEADER)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in _table_rows(report))
    png = base64.b64encode(ctr_over_time_png(report)).decode("ascii")
    title = esc(f"Experiment {report['experiment']}")
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>{title}</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head><body>"
        f"<h1>{title}</h1>"
        f"<p>{esc(report['state'])}, unit {esc(report['unit'])}, started {esc(report['started_at'])}, "
        f"CTR per {esc(report['denominator'])}</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"<p>{esc(_srm_line(report))}</p>"
        f'<img alt="CTR per variant over time" src="data:image/png;base64,{png}">'
        "</body></html>\n"
    )


def render(report: dict[str, Any], fmt: Format = "json") -> str:
    if fmt == "json":
        return json.dumps(report, indent=2) + "\n"
    if fmt == "table":
        return render_table(report)
    if fmt == "html":
        return render_html(report)
    raise ValueError(f"unknown format {fmt!r}")
