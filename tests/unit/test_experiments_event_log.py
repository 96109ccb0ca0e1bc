"""The event log: durable appends, one DuckDB view over every replica's segments and Parquet files, rolling,
recovery from a torn tail, and the import of external logs."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from app.core.errors import ValidationError
from app.experiments.event_log import Event, EventLog, create_events_view, read_events
from app.experiments.importer import import_events
from app.experiments.tokens import AttributionTokens, new_request_id

NOW = 1_790_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def served(rid: str, unit: str = "u1", shown: tuple[str, ...] = ("a", "b", "c")) -> Event:
    return Event("served", rid, "exp", "control", unit, "q", NOW, shown=shown)


def click(rid: str, item: str = "b", position: int = 2, kind: str = "click") -> Event:
    return Event(kind, rid, "exp", "control", "u1", "q", NOW + 1, item_id=item, position=position)


def read(root: Path, sql: str = "SELECT type, request_id, item_id, position, shown, replica FROM events") -> list:
    con = duckdb.connect()
    create_events_view(con, root)
    return sorted(con.execute(sql).fetchall(), key=repr)


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)).split("/")[0] + ":" + p.suffix for p in root.glob("*/*") if p.is_file())


def test_appended_events_are_read_back_from_the_open_segment_and_after_rolling(tmp_path: Path) -> None:
    log = EventLog(tmp_path, "r1", clock=Clock())
    rid = new_request_id()
    assert log.append([served(rid), click(rid)]) == 2
    assert log.append([]) == 0
    expected = [
        ("click", rid, "b", 2, None, "r1"),
        ("served", rid, None, None, ["a", "b", "c"], "r1"),
    ]
    assert read(tmp_path) == expected
    assert files(tmp_path) == ["r1:.jsonl"]
    log.roll()
    assert files(tmp_path) == ["r1:.parquet"]
    assert read(tmp_path) == expected


def test_the_view_spans_replicas_and_an_empty_log_has_the_schema(tmp_path: Path) -> None:
    assert read(tmp_path) == []
    a, b = EventLog(tmp_path, "a"), EventLog(tmp_path, "b")
    a.append([click("1" * 24)])
    b.append([click("2" * 24)])
    a.roll()
    assert [row[-1] for row in read(tmp_path)] == ["a", "b"]


def test_a_new_hour_or_a_full_segment_rolls(tmp_path: Path) -> None:
    clock = Clock()
    log = EventLog(tmp_path, "r1", clock=clock, segment_max_events=3)
    log.append([click(new_request_id()) for _ in range(3)])
    log.append([click(new_request_id())])  # segment full: rolled first
    assert files(tmp_path) == ["r1:.jsonl", "r1:.parquet"]
    clock.now += 3600
    log.append([click(new_request_id())])  # next hour
    assert files(tmp_path) == ["r1:.jsonl", "r1:.parquet", "r1:.parquet"]
    assert read(tmp_path, "SELECT count(*) FROM events") == [(5,)]


def test_a_torn_tail_is_skipped_and_leftover_segments_are_rolled_on_open(tmp_path: Path) -> None:
    log = EventLog(tmp_path, "r1")
    rid = new_request_id()
    log.append([served(rid)])
    segment = next(tmp_path.glob("r1/*.jsonl"))
    with segment.open("ab") as f:  # a batch cut off mid-line by a crash: never acknowledged
        f.write(b'{"type":"click","request_id":"' + rid.encode() + b'","exper')
    assert [r[0] for r in read(tmp_path)] == ["served"]
    del log
    EventLog(tmp_path, "r1")  # the restarted replica
    assert files(tmp_path) == ["r1:.parquet"]
    assert [r[0] for r in read(tmp_path)] == ["served"]


def test_bad_replica_names_and_event_types_are_refused(tmp_path: Path) -> None:
    for name in ("", "a/b", "import", "x" * 65):
        with pytest.raises(ValueError):
            EventLog(tmp_path, name)
    with pytest.raises(ValueError):
        EventLog(tmp_path, "r1").append([Event("view", "1" * 24, "e", "c", "u", "q", NOW)])  # type: ignore[arg-type]


# -- import -------------------------------------------------------------------------------------------------------


@pytest.fixture
def logged(tmp_path: Path) -> tuple[Path, AttributionTokens, str, str]:
    """A log holding one served answer (a, b, c) and the token handed out with it."""
    tokens = AttributionTokens("an-events-secret-0123456789", max_age_s=60)
    rid = new_request_id()
    token = tokens.issue(
        request_id=rid, experiment="exp", variant="control", unit_id="u1", query_item="q", shown=["a", "b", "c"],
        issued_at=NOW,
    )  # fmt: skip
    EventLog(tmp_path / "log", "r1").append([served(rid)])
    return tmp_path, tokens, rid, token


def test_import_accepts_token_and_request_id_rows_and_counts_the_rest(logged) -> None:
    tmp_path, tokens, rid, token = logged
    rows = [
        {"type": "click", "item_id": "b", "attribution_token": token},  # position found from the token
        {"type": "purchase", "item_id": "c", "position": 3, "attribution_token": token, "ts": NOW + 99},
        {"type": "click", "item_id": "z", "attribution_token": token},
        {"type": "click", "item_id": "a", "attribution_token": token[:-2]},
        {"type": "impression", "item_id": "a", "request_id": rid, "ts": "2026-09-20T00:00:00Z"},
        {"type": "click", "item_id": "a", "position": 2, "request_id": rid},
        {"type": "click", "item_id": "a", "request_id": "f" * 24},
        {"type": "like", "item_id": "a", "request_id": rid},
    ]
    path = tmp_path / "marketplace.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    result = import_events(path, tmp_path / "log", tokens)  # the token is long expired: import ignores age
    assert (result.rows, result.accepted) == (8, 3)
    assert dict(result.rejected) == {
        "item_not_shown": 2, "invalid_token": 1, "request_not_found": 1, "validation_error": 1,
    }  # fmt: skip
    got = read(tmp_path / "log", "SELECT type, item_id, position, ts, unit, replica FROM events WHERE type <> 'served'")
    assert got == [
        ("click", "b", 2, NOW, "u1", "import"),
        ("impression", "a", 1, 1789862400.0, "u1", "import"),
        ("purchase", "c", 3, NOW + 99, "u1", "import"),
    ]


def test_import_reads_csv_and_parquet(logged) -> None:
    tmp_path, tokens, rid, _ = logged
    csv = tmp_path / "clicks.csv"
    csv.write_text(f"type,item_id,request_id,position\nclick,c,{rid},3\npurchase,c,{rid},\n")
    assert import_events(csv, tmp_path / "log", tokens).accepted == 2
    parquet = tmp_path / "clicks.parquet"
    duckdb.execute(f"COPY (SELECT 'click' AS type, 'a' AS item_id, '{rid}' AS request_id) TO '{parquet}'")
    assert import_events(parquet, tmp_path / "log", tokens).accepted == 1
    assert read(tmp_path / "log", "SELECT count(*) FROM events WHERE replica = 'import'") == [(3,)]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("log.txt", "x", "unknown log format"),
        ("log.csv", "type,item_id\nclick,a\n", "needs columns"),
        ("log.parquet", "not parquet", "cannot read"),
    ],
)
def test_import_refuses_unusable_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValidationError, match=message):
        import_events(path, tmp_path / "log", AttributionTokens("an-events-secret-0123456789"))
    assert not (tmp_path / "log").exists() or not list((tmp_path / "log").rglob("*.parquet"))


def test_many_batches_are_all_read_back(tmp_path: Path) -> None:
    log = EventLog(tmp_path, "r1")
    for b in range(200):
        log.append([click(f"{b:024x}", f"i{i}", i + 1, "impression") for i in range(100)])
    assert read(tmp_path, "SELECT count(*), count(DISTINCT request_id) FROM events") == [(20_000, 200)]


def test_a_reader_retries_when_a_segment_is_rolled_under_it(tmp_path: Path) -> None:
    log = EventLog(tmp_path, "r1")
    log.append([click(new_request_id())])
    attempts = []

    def query(con: duckdb.DuckDBPyConnection) -> int:
        attempts.append(1)
        if len(attempts) == 1:
            log.roll()  # another process rolls the segment after the view listed it
        return con.execute("SELECT count(*) FROM events").fetchone()[0]

    assert read_events(tmp_path, query) == 1
    assert len(attempts) == 2
