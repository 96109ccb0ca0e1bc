"""GroupCommitLog: served rows are queued without waiting for the disk and written by a background thread;
close() writes what is left; a full queue drops rows (counted) instead of blocking an answer."""

from __future__ import annotations

import time
from pathlib import Path

from app.experiments.event_log import Event, EventLog, read_events
from app.experiments.group_commit import GroupCommitLog


def served(i: int) -> Event:
    return Event("served", f"{i:024x}", "exp", "control", f"u{i}", "q", 1_790_000_000.0 + i, shown=("a", "b"))


def logged_request_ids(root: Path) -> list[str]:
    return read_events(root, lambda con: [r[0] for r in con.execute("SELECT request_id FROM events").fetchall()])


def test_rows_reach_the_log_in_the_background_and_on_close(tmp_path: Path) -> None:
    log = EventLog(tmp_path, "r1")
    group = GroupCommitLog(log, interval_s=0.001)
    assert group.append([served(i) for i in range(50)]) == 50
    deadline = time.monotonic() + 10
    while len(logged_request_ids(tmp_path)) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)  # the writer thread's tick, bounded
    assert len(logged_request_ids(tmp_path)) == 50
    group.append([served(i) for i in range(50, 60)])
    group.close()
    log.close()
    assert sorted(logged_request_ids(tmp_path)) == sorted(f"{i:024x}" for i in range(60))


def test_a_full_queue_drops_rows_instead_of_blocking(tmp_path: Path) -> None:
    log = EventLog(tmp_path, "r1")
    group = GroupCommitLog(log, interval_s=60, max_queued=5)  # the thread does not tick during the test
    assert group.append([served(i) for i in range(8)]) == 5
    assert group.dropped == 3
    group.close()
    log.close()
    assert len(logged_request_ids(tmp_path)) == 5
