"""MicroBatcher: one bounded queue in front of the encoder, one future per image.

Admission fails fast (429 when the queue is full, never an unbounded wait); a background task takes
up to `max_batch_size` images, waiting at most `max_wait_ms` for a batch to fill, and runs the encoder
on one worker thread so the event loop never blocks on inference. While a batch runs, the next one
fills, so under load batches grow on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from app import metrics
from app.errors import NotReady, Overloaded


@dataclass
class _Job:
    pixels: np.ndarray
    future: asyncio.Future[np.ndarray]
    enqueued: float
    deadline: float


class MicroBatcher:
    def __init__(
        self,
        encode: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        queue_max: int,
    ) -> None:
        self._encode = encode
        self.max_batch_size = max_batch_size
        self._max_wait_s = max_wait_ms / 1000
        self.queue_max = queue_max
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        self._in_flight = 0

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.queue_max)
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue else 0

    def saturated(self) -> bool:
        return self._queue is not None and self._queue.full()

    async def submit(self, pixels: np.ndarray, timeout_s: float) -> np.ndarray:
        """Embed one uint8 HxWx3 image; raises Overloaded at once when the queue is full."""
        if self._queue is None or self._task is None or self._task.done():
            raise NotReady("the encoder is not running")
        now = time.monotonic()
        job = _Job(pixels, asyncio.get_running_loop().create_future(), now, now + timeout_s)
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            metrics.overload_rejections.inc()
            raise Overloaded(f"the encoder queue is full ({self.queue_max} images); retry shortly") from None
        metrics.batch_queue_depth.set(self._queue.qsize())
        try:
            # The caller's deadline holds even while a long batch runs; the cancelled future makes
            # _live() drop the job if it is still queued, so expired work never reaches the encoder.
            return await asyncio.wait_for(job.future, timeout_s)
        except TimeoutError:
            metrics.overload_rejections.inc()
            raise Overloaded("the image waited too long for the encoder; retry shortly") from None

    async def _next_batch(self) -> list[_Job]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        give_up = time.monotonic() + self._max_wait_s
        while len(batch) < self.max_batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        metrics.batch_queue_depth.set(self._queue.qsize())
        return batch

    def _live(self, batch: list[_Job]) -> list[_Job]:
        """Drop jobs whose caller gave up or whose deadline passed: expired work never reaches the encoder."""
        now = time.monotonic()
        live = []
        for job in batch:
            if job.future.done():
                continue
            if now > job.deadline:
                job.future.set_exception(Overloaded("the image waited too long for the encoder; retry shortly"))
                metrics.overload_rejections.inc()
                continue
            metrics.batch_queue_wait.observe(now - job.enqueued)
            live.append(job)
        return live

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = self._live(await self._next_batch())
            if not jobs:
                continue
            metrics.batch_size.observe(len(jobs))
            pixels = np.stack([job.pixels for job in jobs])
            started = time.perf_counter()
            self._in_flight = len(jobs)
            try:
                vectors = await loop.run_in_executor(self._executor, self._encode, pixels)
            except Exception as exc:  # the encoder failing is a bug or a broken model: answer 500, keep serving
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            finally:
                self._in_flight = 0
                metrics.inference_duration.observe(time.perf_counter() - started)
            for job, vector in zip(jobs, vectors, strict=True):
                if not job.future.done():
                    job.future.set_result(vector)

    async def stop(self) -> None:
        """Finish what is queued, then stop (graceful shutdown drains, it does not drop)."""
        if self._task is None or self._queue is None:
            return
        deadline = time.monotonic() + 20
        while (self._queue.qsize() or self._in_flight) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(NotReady("the service is shutting down"))
        self._executor.shutdown(wait=True)
