"""Import the marketplace's own click/purchase logs into the event log (`lookalike experiments import FILE`).

DuckDB reads the file (CSV, JSON/JSONL or Parquet, by extension). Each row has `type` (impression, click or
purchase), `item_id`, optional `position` (1-based) and `ts` (unix seconds or an ISO time), and either
`attribution_token` (checked like POST /events, except for its age: imported logs are often old) or
`request_id` (joined in SQL with the served rows already in the log, which supply experiment, variant and unit,
and checked against that answer's shown list). Accepted rows go into one new Parquet file under <root>/import/;
importing the same file twice changes no count, since the report de-duplicates by (request id, type,
position), and the token or the served list ties each position to one item.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np

from app.core.errors import LookalikeError, ValidationError
from app.experiments.event_log import COLUMNS, create_events_view, write_rows
from app.experiments.tokens import AttributionTokens

ACTION_TYPES = ("impression", "click", "purchase")


@dataclass
class ImportResult:
    rows: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # error code -> rows
    file: Path | None = None  # the Parquet file written (None when nothing was accepted)


def _reader(path: Path) -> str:
    quoted = "'" + str(path).replace("'", "''") + "'"
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return f"read_csv({quoted}, header=true, all_varchar=true)"
    if suffix in (".json", ".jsonl", ".ndjson"):
        return f"read_json({quoted}, format='auto')"
    if suffix == ".parquet":
        return f"read_parquet({quoted})"
    raise ValidationError(f"{path}: unknown log format {suffix!r} (use .csv, .jsonl, .json or .parquet)")


def import_events(path: str | Path, root: str | Path, tokens: AttributionTokens) -> ImportResult:
    path = Path(path)
    con = duckdb.connect()
    try:
        result = _load_rows(con, path)
        _verify_tokens(con, tokens, result)
        create_events_view(con, root)
        names = ", ".join(COLUMNS)
        by_request = """
            WITH served AS (
                SELECT request_id, any_value(experiment) AS experiment, any_value(variant) AS variant,
                       any_value(unit) AS unit, any_value(query_item) AS query_item, any_value(shown) AS shown,
                       min(ts) AS served_ts
                FROM events WHERE type = 'served' GROUP BY request_id
            ),
            joined AS (
                SELECT r.*, s.experiment, s.variant, s.unit, s.query_item, s.shown, s.served_ts,
                       coalesce(r.position, list_position(s.shown, r.item_id)) AS pos
                FROM rows r LEFT JOIN served s USING (request_id) WHERE r.token IS NULL
            )
            SELECT type, request_id, experiment, variant, unit, query_item, item_id, pos::INTEGER AS position,
                   NULL::VARCHAR[] AS shown, NULL::VARCHAR AS shadow_variant, NULL::VARCHAR[] AS shadow_shown,
                   coalesce(ts, served_ts) AS ts, 'import' AS replica,
                   CASE WHEN experiment IS NULL THEN 'request_not_found'
                        WHEN pos IS NULL OR shown[pos] IS DISTINCT FROM item_id THEN 'item_not_shown' END AS problem
            FROM joined
        """
        con.execute(f"CREATE TEMP TABLE by_request AS {by_request}")
        for problem, n in con.execute(
            "SELECT problem, count(*) FROM by_request WHERE problem IS NOT NULL GROUP BY ALL"
        ).fetchall():
            result.rejected[problem] += n
        accepted = f"SELECT {names} FROM by_request WHERE problem IS NULL UNION ALL SELECT {names} FROM by_token"
        result.accepted = con.execute(f"SELECT count(*) FROM ({accepted})").fetchone()[0]
        if result.accepted:
            result.file = write_rows(root, "import", accepted, con)
        return result
    finally:
        con.close()


def _load_rows(con: duckdb.DuckDBPyConnection, path: Path) -> ImportResult:
    """The file's rows, normalised, in temp table `rows`; those without a type, an item or a token/request id
    are counted as rejected and dropped."""
    try:
        con.execute(f"CREATE TEMP TABLE raw AS SELECT * FROM {_reader(path)}")
    except duckdb.Error as err:
        raise ValidationError(f"{path}: cannot read: {err}") from None
    present = {row[0] for row in con.execute("DESCRIBE raw").fetchall()}
    if not {"type", "item_id"} <= present or not present & {"attribution_token", "request_id"}:
        raise ValidationError(f"{path}: needs columns type, item_id and attribution_token or request_id")

    def col(name: str, cast: str = "VARCHAR") -> str:
        return f"TRY_CAST({name} AS {cast})" if name in present else f"NULL::{cast}"

    ts = col("ts", "DOUBLE")
    if "ts" in present:
        ts = f"coalesce({ts}, epoch(TRY_CAST(ts AS TIMESTAMPTZ)))"
    con.execute(
        f"""CREATE TEMP TABLE rows AS SELECT row_number() OVER () AS idx, lower({col("type")}) AS type,
        {col("item_id")} AS item_id, {col("position", "INTEGER")} AS position, {ts} AS ts,
        {col("attribution_token")} AS token, {col("request_id")} AS request_id FROM raw"""
    )
    result = ImportResult(rows=con.execute("SELECT count(*) FROM rows").fetchone()[0])
    unusable = (
        "type NOT IN ('impression', 'click', 'purchase') OR type IS NULL "
        "OR item_id IS NULL OR (token IS NULL AND request_id IS NULL)"
    )
    bad = con.execute(f"SELECT count(*) FROM rows WHERE {unusable}").fetchone()[0]
    result.rejected.update({"validation_error": bad} if bad else {})
    con.execute(f"DELETE FROM rows WHERE {unusable}")
    return result


def _verify_tokens(con: duckdb.DuckDBPyConnection, tokens: AttributionTokens, result: ImportResult) -> None:
    """Check each token row's HMAC (a per-row computation DuckDB cannot do) into temp table by_token."""
    accepted: dict[str, list] = {k: [] for k in ("type", "request_id", "experiment", "variant", "unit", "query_item",
                                                  "item_id", "position", "ts")}  # fmt: skip
    rows = con.execute("SELECT type, item_id, position, ts, token FROM rows WHERE token IS NOT NULL").fetchall()
    for kind, item_id, position, ts, token in rows:
        try:
            if position is None:
                claims, position = tokens.locate(token, item_id, check_age=False)
            else:
                claims = tokens.verify(token, item_id, position, check_age=False)
        except LookalikeError as err:
            result.rejected[err.code] += 1
            continue
        values = (kind, claims.request_id, claims.experiment, claims.variant, claims.unit_id, claims.query_item,
                  item_id, position, float(ts if ts is not None else claims.issued_at))  # fmt: skip
        for key, value in zip(accepted, values, strict=True):
            accepted[key].append(value)
    frame = {k: np.array(v, dtype=object if k not in ("position", "ts") else None) for k, v in accepted.items()}
    frame["position"] = np.array(accepted["position"], dtype=np.int32)
    frame["ts"] = np.array(accepted["ts"], dtype=np.float64)
    verified = frame  # noqa: F841 - read by DuckDB by name
    con.execute(
        """CREATE TEMP TABLE by_token AS SELECT type::VARCHAR AS type, request_id::VARCHAR AS request_id,
        experiment::VARCHAR AS experiment, variant::VARCHAR AS variant, unit::VARCHAR AS unit,
        query_item::VARCHAR AS query_item, item_id::VARCHAR AS item_id, position::INTEGER AS position,
        NULL::VARCHAR[] AS shown, NULL::VARCHAR AS shadow_variant, NULL::VARCHAR[] AS shadow_shown, ts,
        'import' AS replica FROM verified"""
    )
