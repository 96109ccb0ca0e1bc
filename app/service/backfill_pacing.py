"""When a backfill may start its next image: the yielding rule, so live traffic goes first.

Live writes: the runner waits while `busy()` says live encoder work is under way (half or more of the
admission permits held, or the serving version's queue holding a full batch: app/service/backfill.py
`service_backfill`), for as long as it lasts; a live write waits behind at most one backfill batch.

Reads first: reads (GET and POST /similar) take no permit, yet on a small machine the backfill's decoding and
encoding take the cores they need. So the runner also waits while a read is in flight or one ended less than
READ_QUIET_S ago (app/service/reads.py ReadTraffic), for at most READ_PAUSE_MAX_S per image: a constant read
load slows the backfill to about one image per READ_PAUSE_MAX_S (its minimum rate) but never stops it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

BUSY_POLL_S = 0.05  # how often a runner paused for live writes looks again
# A client that reads in a loop sends its next read within a millisecond of its answer, so a few ms of quiet
# means nobody is reading (bench/model_upgrade.py measures the rule's effect, not these two values' best setting).
READ_QUIET_S = 0.005
READ_PAUSE_MAX_S = 0.25  # the longest one image waits for reads: the backfill's minimum rate under constant reads
READ_POLL_S = 0.002  # how often a runner paused for reads looks again


class Pacing:
    """`busy`: live writes under way. `reads_quiet_s`: seconds since reads were last in flight (0 while one is);
    None: the runner does not yield to reads (LOOKALIKE_BACKFILL_YIELD_TO_READS=false)."""

    def __init__(self, busy: Callable[[], bool], reads_quiet_s: Callable[[], float] | None) -> None:
        self._busy = busy
        self._reads_quiet_s = reads_quiet_s

    async def wait(self) -> None:
        """Return when the next image may start."""
        while self._busy():
            await asyncio.sleep(BUSY_POLL_S)
        if self._reads_quiet_s is None:
            return
        paused_until = time.monotonic() + READ_PAUSE_MAX_S  # bounded: constant reads slow the run, never stop it
        while (quiet := self._reads_quiet_s()) < READ_QUIET_S and time.monotonic() < paused_until:
            await asyncio.sleep(max(READ_POLL_S, READ_QUIET_S - quiet))
