"""Group commit of served rows: GET /similar must not wait for an fsync.

`GroupCommitLog.append` only queues the rows; one background thread appends whatever has queued to the durable
`EventLog` every `interval_s` (one write + one fsync for all of them). The price: a served row queued in the
last few milliseconds before a kill -9 is lost (its answer's later events still count: the report keys answers
by request id, and events carry everything the token says), and so are the rows of a write that fails (a full
disk): they are off the queue by then and nothing writes them again. POST /events never goes through here: its
acknowledgements are written and fsynced before the answer.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable

from app.experiments.event_log import Event, EventLog

log = logging.getLogger("lookalike")


class GroupCommitLog:
    def __init__(self, log: EventLog, *, interval_s: float = 0.005, max_queued: int = 100_000) -> None:
        self._log = log
        self._interval_s = interval_s
        self._queue: queue.Queue[Event] = queue.Queue(max_queued)
        self._closed = threading.Event()
        self.dropped = 0  # rows refused because the queue was full (the disk is not keeping up)
        self._thread = threading.Thread(target=self._run, name="served-log", daemon=True)
        self._thread.start()

    def append(self, events: Iterable[Event]) -> int:
        """Queue the rows (never blocks); returns how many were queued."""
        queued = 0
        for event in events:
            try:
                self._queue.put_nowait(event)
                queued += 1
            except queue.Full:
                self.dropped += 1
        return queued

    def flush(self) -> None:
        """Write everything queued so far (the caller's thread); used on close and by tests."""
        batch: list[Event] = []
        while True:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if batch:
            self._log.append(batch)

    def _run(self) -> None:
        while not self._closed.wait(self._interval_s):
            try:
                self.flush()
            except Exception:  # a full disk must not kill the writer; the rows of the failed batch are lost
                log.exception("could not write served rows to the event log; those rows are dropped")

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self.flush()
