"""The encoder's threads run at LOOKALIKE_ENCODER_NICE, so reads take the cores first (app/encode/priority.py):
the ONNX Runtime pool of a real session, the thread that runs the batches, and nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from pathlib import Path

import numpy as np

from app.core.settings import Settings
from app.encode.model_set import BatchLimits, ModelSet
from app.service.runtime import load_models

NICE = 7
LIMITS = BatchLimits(max_batch_size=4, max_wait_ms=5.0, queue_max=16, max_hold_ms=1000.0, drain_s=5.0)


def thread_nices() -> dict[int, int]:
    """{thread id: niceness} of this process's threads."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            out[int(tid)] = os.getpriority(os.PRIO_PROCESS, int(tid))
    return out


def threads_named(before: dict[int, int], after: dict[int, int]) -> list[tuple[int, str, int | None, int]]:
    """(tid, name, niceness before, after) of every thread: what a failure shows."""
    out = []
    for tid, nice in sorted(after.items()):
        with contextlib.suppress(OSError):
            out.append((tid, Path(f"/proc/self/task/{tid}/comm").read_text().strip(), before.get(tid), nice))
    return out


def this_thread_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_sessions_and_encoder_threads_run_at_the_niceness_and_the_rest_does_not(tiny_model_path: Path) -> None:
    before = thread_nices()
    models = ModelSet.load([tiny_model_path], "cpu", threads=3, nice=NICE)
    after = thread_nices()
    # ONNX Runtime's intra-op pool started with the session and inherited the niceness. Counted by niceness,
    # which no other test uses (a new thread may get the id of one that ended meanwhile), and at least one:
    # alone the session starts two workers for 3 threads, after other tests in one process one was seen.
    assert [tid for tid, nice in after.items() if nice == NICE], threads_named(before, after)
    assert this_thread_nice() == before[threading.get_native_id()] == 0  # the caller's thread is untouched

    async def run() -> tuple[int, np.ndarray]:
        await models.start({v: LIMITS for v in models.encoders})
        try:
            [(version, batcher)] = models.batchers.items()
            size = models.encoders[version].image_size
            vectors = await batcher.submit(np.full((size, size, 3), 128, np.uint8), timeout_s=30.0)
            nice = await asyncio.get_running_loop().run_in_executor(batcher._executor, this_thread_nice)
            return nice, vectors
        finally:
            await models.stop()

    nice, vector = asyncio.run(run())
    assert nice == NICE  # the thread that runs the batches
    assert np.isclose(np.linalg.norm(vector), 1.0, atol=1e-4)  # and it still encodes


def test_the_setting_reaches_the_sessions_and_zero_leaves_priorities_alone(tiny_model_path: Path) -> None:
    assert Settings().encoder_nice == 19
    before = thread_nices()
    models = load_models(Settings(model_path=[tiny_model_path], device="cpu", ort_threads=2, encoder_nice=0))
    started = {tid: nice for tid, nice in thread_nices().items() if tid not in before}
    assert started and set(started.values()) == {0}
    assert models.nice == 0
    assert load_models(Settings(model_path=[tiny_model_path], device="cpu", encoder_nice=12)).nice == 12
