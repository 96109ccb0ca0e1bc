"""The experiment event log: append-only, durable, one writer per replica, read by DuckDB as one view.

Layout under the log root (the data dir, or a volume shared by the replicas):

    <root>/<replica>/<hour>-<start ns>.jsonl      write-ahead segment being appended to (at most one open)
    <root>/<replica>/<hour>-<start ns>.parquet    the same segment rolled into Parquet by DuckDB COPY
    <root>/import/<...>.parquet                   rows imported from the marketplace's own logs

Why JSONL segments + Parquet rolls: an acknowledged event must survive kill -9, so every `append` writes its
batch as JSON lines and fsyncs before returning (one fsync per batch, no Parquet writer state to lose).
A segment is rolled when its hour ends or it holds `segment_max_events`, and every segment left by an earlier
process is rolled when the log opens: DuckDB reads the JSONL (skipping a torn last line that was never
acknowledged) and COPYs it into a temporary Parquet file that is fsynced and renamed; then the JSONL is deleted.
Replicas never coordinate: each writes only its own directory. Readers glob all replicas' Parquet files plus the
still-open segments (`events_sql`); a segment whose Parquet already exists is skipped, and in the instant
between rename and delete the report's de-duplication (served by request id, others by request id, type and
position, which the token ties to one item) keeps the counts right anyway.
The log root is the log's own directory: every subdirectory is read as a replica's (or the import's) files.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, TypeVar

import duckdb

T = TypeVar("T")
EventType = Literal["served", "impression", "click", "purchase"]
EVENT_TYPES: tuple[str, ...] = ("served", "impression", "click", "purchase")
REPLICA_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# The row schema, in column order, as DuckDB types (JSON segments are read with exactly these columns).
COLUMNS: dict[str, str] = {
    "type": "VARCHAR",
    "request_id": "VARCHAR",
    "experiment": "VARCHAR",
    "variant": "VARCHAR",
    "unit": "VARCHAR",
    "query_item": "VARCHAR",
    "item_id": "VARCHAR",  # null for served
    "position": "INTEGER",  # 1-based; null for served
    "shown": "VARCHAR[]",  # served: the item ids shown, in order
    "shadow_variant": "VARCHAR",  # served in shadow mode: the variant computed but not shown
    "shadow_shown": "VARCHAR[]",  # ...and its list
    "ts": "DOUBLE",  # unix seconds, UTC
    "replica": "VARCHAR",
}


@dataclass(frozen=True)
class Event:
    type: EventType
    request_id: str
    experiment: str
    variant: str
    unit: str
    query_item: str
    ts: float
    item_id: str | None = None
    position: int | None = None
    shown: tuple[str, ...] | None = None
    shadow_variant: str | None = None
    shadow_shown: tuple[str, ...] | None = None


def _hour(ts: float) -> str:
    return time.strftime("%Y%m%d%H", time.gmtime(ts))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _json_source(paths: Sequence[Path]) -> str:
    columns = "{" + ", ".join(f"{_sql_str(k)}: {_sql_str(v)}" for k, v in COLUMNS.items()) + "}"
    files = "[" + ", ".join(_sql_str(str(p)) for p in paths) + "]"
    # ignore_errors: a torn last line (never acknowledged) reads as an all-null row, dropped by `type IS NOT NULL`.
    return (
        f"SELECT * FROM read_json({files}, format='newline_delimited', ignore_errors=true, "
        f"columns={columns}) WHERE type IS NOT NULL"
    )


def _copy_to_parquet(con: duckdb.DuckDBPyConnection, select_sql: str, target: Path) -> None:
    """COPY a query into `target` atomically and durably (temporary file, fsync, rename, fsync of the directory)."""
    tmp = target.with_name("." + target.name + ".tmp")
    con.execute(f"COPY ({select_sql}) TO {_sql_str(str(tmp))} (FORMAT parquet, COMPRESSION zstd)")
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    _fsync_dir(target.parent)


class EventLog:
    """This replica's writer. `append` returns only once the batch is on disk (fsynced)."""

    def __init__(
        self,
        root: str | Path,
        replica: str,
        *,
        segment_max_events: int = 200_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not REPLICA_PATTERN.match(replica) or replica == "import":
            raise ValueError(f"bad replica name {replica!r}")
        self.root = Path(root)
        self.replica = replica
        self.directory = self.root / replica
        self.directory.mkdir(parents=True, exist_ok=True)
        self._segment_max = segment_max_events
        self._clock = clock
        self._lock = threading.Lock()
        self._file = None
        self._segment: Path | None = None
        self._segment_hour = ""
        self._segment_events = 0
        self._roll_leftovers()

    # -- writing --------------------------------------------------------------------------------------------------

    def append(self, events: Iterable[Event]) -> int:
        """Write a batch durably; returns how many events were written."""
        rows = [self._row(e) for e in events]
        if not rows:
            return 0
        data = "".join(rows).encode()
        with self._lock:
            now = self._clock()
            if self._file is None or _hour(now) != self._segment_hour or self._segment_events >= self._segment_max:
                self._close_and_roll()
                self._open_segment(now)
            assert self._file is not None
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._segment_events += len(rows)
        return len(rows)

    def _row(self, event: Event) -> str:
        if event.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event.type!r}")
        row = asdict(event)
        row["replica"] = self.replica
        return json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n"

    def _open_segment(self, now: float) -> None:
        self._segment_hour = _hour(now)
        self._segment = self.directory / f"{self._segment_hour}-{time.time_ns()}.jsonl"
        self._file = open(self._segment, "ab")  # noqa: SIM115 - kept open across appends, closed on roll
        _fsync_dir(self.directory)  # the new file's name is durable before any event in it is acknowledged
        self._segment_events = 0

    def roll(self) -> None:
        """Close the open segment and roll it into Parquet (the next append opens a new one)."""
        with self._lock:
            self._close_and_roll()

    def close(self) -> None:
        self.roll()

    def _close_and_roll(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            assert self._segment is not None
            roll_segment(self._segment)
            self._segment = None

    def _roll_leftovers(self) -> None:
        for segment in sorted(self.directory.glob("*.jsonl")):
            roll_segment(segment)
        for tmp in self.directory.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def roll_segment(segment: Path) -> Path:
    """Turn one closed JSONL segment into Parquet next to it and delete the segment; returns the Parquet path."""
    target = segment.with_suffix(".parquet")
    if not target.exists():
        con = duckdb.connect()
        try:
            _copy_to_parquet(con, _json_source([segment]), target)
        finally:
            con.close()
    segment.unlink(missing_ok=True)
    _fsync_dir(segment.parent)
    return target


def empty_select() -> str:
    return "SELECT " + ", ".join(f"NULL::{t} AS {k}" for k, t in COLUMNS.items()) + " WHERE false"


def events_sql(root: str | Path) -> str:
    """A SELECT over every replica's events under `root` (Parquet files and open segments), with COLUMNS.

    Segments are listed before Parquet files: one rolled in between is then found as Parquet and skipped as a
    segment. One rolled after both listings is gone when DuckDB opens it; `read_events` retries then.
    """
    root = Path(root)
    segments = sorted(root.glob("*/*.jsonl"))
    parquet = sorted(root.glob("*/*.parquet"))
    rolled = {p.with_suffix("") for p in parquet}
    names = ", ".join(COLUMNS)
    parts = []
    if parquet:
        files = "[" + ", ".join(_sql_str(str(p)) for p in parquet) + "]"
        parts.append(f"SELECT {names} FROM read_parquet({files}, union_by_name=true)")
    segments = [s for s in segments if s.with_suffix("") not in rolled]
    if segments:
        parts.append(f"SELECT {names} FROM ({_json_source(segments)})")
    return " UNION ALL ".join(parts) if parts else empty_select()


def create_events_view(con: duckdb.DuckDBPyConnection, root: str | Path, name: str = "events") -> None:
    """(Re)create view `name` over the log as it is now (a later file appears in the next call)."""
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {events_sql(root)}")


def read_events(root: str | Path, query: Callable[[duckdb.DuckDBPyConnection], T], attempts: int = 3) -> T:
    """Run `query` on a fresh connection with view `events` over the log, again if a file vanished meanwhile
    (a segment rolled, a temporary file renamed by a writer on another replica)."""
    for attempt in range(attempts):
        con = duckdb.connect()
        try:
            create_events_view(con, root)
            return query(con)
        except duckdb.IOException:
            if attempt == attempts - 1:
                raise
        finally:
            con.close()
    raise AssertionError("unreachable")


def write_rows(root: str | Path, source: str, select_sql: str, con: duckdb.DuckDBPyConnection) -> Path:
    """Write the rows of `select_sql` (COLUMNS, in order) as one new Parquet file under <root>/<source>/."""
    directory = Path(root) / source
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{_hour(time.time())}-{time.time_ns()}.parquet"
    _copy_to_parquet(con, select_sql, target)
    return target
