"""The CPU priority of the encoder's threads: reads go first.

On the CPU an ONNX Runtime session spreads one batch over every core it is given, and a SigLIP-B/16 image takes
~200 ms of them on two cores. A GET /similar arriving meanwhile (HTTP, the store's search, the reader processes)
waited for those cores: during a backfill its p99 was 1.7-6.6x the idle one even with the backfill pausing
for reads, because a batch already on the encoder cannot be paused (BENCHMARKS.md, "Model upgrade"). So the
encoder's threads run at a higher niceness (`LOOKALIKE_ENCODER_NICE`, default 19: 10 measured no better than
0): the kernel gives the cores to reads first and every cycle they leave to the encoder, which on an idle machine
is all of them, and under a read load that fills every core almost nothing.

On Linux niceness belongs to a thread and the threads it starts inherit it. ONNX Runtime starts its intra-op
pool when a session is created, so sessions are created in a thread that lowered its own priority
(`in_lowered_thread`), and the threads that call `run` lower theirs when they start (`lower_this_thread` as
an executor's initializer). Only ever lowered (raising needs privileges), never below the process's own.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("lookalike")

T = TypeVar("T")


def lower_this_thread(nice: int) -> None:
    """Set the calling thread's niceness to `nice` if that lowers its priority (0: leave it)."""
    if nice <= 0:
        return
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if nice > current:
            os.setpriority(os.PRIO_PROCESS, tid, min(nice, 19))
    except OSError as exc:  # e.g. a seccomp profile that forbids it: encoding still works, at normal priority
        log.warning("could not lower the encoder thread's CPU priority (%s); reads will share the cores", exc)


def in_lowered_thread(fn: Callable[[], T], nice: int) -> T:
    """`fn()` run in a new thread that first lowers its priority to `nice`, so the threads `fn` starts (ONNX
    Runtime's pool) inherit it; returns what `fn` returns or raises what it raised."""
    if nice <= 0:
        return fn()
    out: dict[str, object] = {}

    def run() -> None:
        lower_this_thread(nice)
        try:
            out["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            out["error"] = exc

    thread = threading.Thread(target=run, name="encoder-load")
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["value"]  # type: ignore[return-value]
