"""MicroBatcher: one bounded queue in front of the encoder, one future per image.

Admission fails fast (429 when the queue is full, never an unbounded wait); a background task takes
up to `max_batch_size` images and runs the encoder on one worker thread so the event loop never
blocks on inference. While a batch runs, the next one fills, so under load batches grow on their own.

How long a batch waits to fill: `max_wait_ms` for images nobody has announced, and longer for images
the service has announced with `reserve()` (admitted, still being decoded) before the batch opened.
Without that, a closed loop of clients alternates a batch of 1 with a batch of c-1: when a batch
finishes, its clients send their next images at once, the first decoded one opens a batch and the
others are still decoding when a short wait ends. The longer wait is bounded by the time the last
batch took to run (waiting less than one batch's run costs less than running a second batch; this
scales itself to the device) and by `max_hold_ms`; a reservation given up (the decode failed, the
client left) stops counting at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from app.core import metrics
from app.core.errors import NotReady, Overloaded


@dataclass
class _Job:
    pixels: np.ndarray
    future: asyncio.Future[np.ndarray]
    enqueued: float
    deadline: float


class Reservation:
    """One announced image: admitted by the service, still decoding, expected at submit() soon.

    A handle on the batcher's public API (submit, withdraw); `seq` orders it among announcements.
    """

    def __init__(self, batcher: MicroBatcher, seq: int) -> None:
        self._batcher = batcher
        self.seq = seq

    async def submit(self, pixels: np.ndarray, timeout_s: float) -> np.ndarray:
        return await self._batcher.submit(pixels, timeout_s, reservation=self)

    def release(self) -> None:
        """No longer expected (submitted, or given up); idempotent."""
        self._batcher.withdraw(self)


class MicroBatcher:
    def __init__(
        self,
        encode: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        queue_max: int,
        max_hold_ms: float = 1000.0,
        drain_s: float = 20.0,
        executor: ThreadPoolExecutor | None = None,
        thread_init: Callable[[], None] | None = None,
        version: str = "unnamed",
    ) -> None:
        """`executor`: where batches run; shared by several batchers (several models on one CPU) so that
        their batches take turns instead of fighting for the same cores. Its owner shuts it down.
        `thread_init`: run by this batcher's own encoder thread when it starts (its CPU priority).
        `version`: the model version, the label of this batcher's metrics."""
        self._encode = encode
        self._depth_gauge = metrics.batch_queue_depth.labels(version=version)
        self._wait_seconds = metrics.batch_queue_wait.labels(version=version)
        self._batch_sizes = metrics.batch_size.labels(version=version)
        self._encode_seconds = metrics.inference_duration.labels(version=version)
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self._max_wait_s = max_wait_ms / 1000
        self._max_hold_s = max(max_hold_ms / 1000, self._max_wait_s)
        self.queue_max = queue_max
        self.drain_s = drain_s  # stop() finishes queued work for at most this long
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="encoder", initializer=thread_init
        )
        self._in_flight = 0
        self._next_seq = 0  # sequence number of the next reservation
        self._announced: dict[int, None] = {}  # seq of images reserved and not yet submitted, oldest first
        self._wake = asyncio.Event()  # set when an image is queued or a reservation is released
        self._last_run_s = self._max_hold_s  # how long the last batch took to encode; unknown = the cap

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.queue_max)
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue else 0

    @property
    def announced(self) -> int:
        """Images reserved (being decoded) and not yet submitted."""
        return len(self._announced)

    def saturated(self) -> bool:
        return self._queue is not None and self._queue.full()

    @contextlib.contextmanager
    def reserve(self) -> Iterator[Reservation]:
        """Announce an image that will reach submit() soon (call it before decoding, then `slot.submit`).

        A batch opened while the image is announced waits for it (bounded, see the module docstring).
        Leaving the block without submitting (a failed decode, a cancelled request) withdraws it.
        """
        reservation = self.announce()
        try:
            yield reservation
        finally:
            self.withdraw(reservation)

    def announce(self) -> Reservation:
        """Announce an image that will reach submit() soon; withdraw() it if it never will.

        reserve() does both around a block; announce/withdraw are for callers that cannot use a block.
        """
        seq = self._next_seq
        self._next_seq += 1
        self._announced[seq] = None
        return Reservation(self, seq)

    def withdraw(self, reservation: Reservation) -> None:
        """The announced image is no longer on its way (submitted, or given up); idempotent."""
        if reservation.seq in self._announced:
            del self._announced[reservation.seq]
            self._wake.set()

    def _announced_before(self, horizon: int) -> bool:
        oldest = next(iter(self._announced), None)
        return oldest is not None and oldest < horizon

    async def submit(
        self, pixels: np.ndarray, timeout_s: float, *, reservation: Reservation | None = None
    ) -> np.ndarray:
        """Embed one uint8 HxWx3 image; raises Overloaded at once when the queue is full."""
        try:
            if self._queue is None or self._task is None or self._task.done():
                raise NotReady("the encoder is not running")
            now = time.monotonic()
            job = _Job(pixels, asyncio.get_running_loop().create_future(), now, now + timeout_s)
            try:
                self._queue.put_nowait(job)
            except asyncio.QueueFull:
                metrics.overload_rejections.inc()
                raise Overloaded(f"the encoder queue is full ({self.queue_max} images); retry shortly") from None
        finally:
            if reservation is not None:  # queued (or refused): no longer on its way
                self.withdraw(reservation)
        self._wake.set()
        self._depth_gauge.set(self._queue.qsize())
        try:
            # The caller's deadline holds even while a long batch runs; the cancelled future makes
            # _live() drop the job if it is still queued, so expired work never reaches the encoder.
            return await asyncio.wait_for(job.future, timeout_s)
        except TimeoutError:
            metrics.overload_rejections.inc()
            raise Overloaded("the image waited too long for the encoder; retry shortly") from None

    def hold_s(self) -> float:
        """Longest wait for announced images: the last batch's run time, within [max_wait, max_hold]."""
        return min(self._max_hold_s, max(self._max_wait_s, self._last_run_s))

    async def _next_batch(self) -> list[_Job]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        opened = time.monotonic()
        horizon = self._next_seq  # images announced before the batch opened are waited for; later ones are not
        fill_by = opened + self._max_wait_s
        hold_by = opened + self.hold_s()
        while len(batch) < self.max_batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            deadline = hold_by if self._announced_before(horizon) else fill_by
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)
        self._depth_gauge.set(self._queue.qsize())
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
            self._wait_seconds.observe(now - job.enqueued)
            live.append(job)
        return live

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = self._live(await self._next_batch())
            if not jobs:
                continue
            self._batch_sizes.observe(len(jobs))
            pixels = np.stack([job.pixels for job in jobs])
            self._in_flight = len(jobs)
            try:
                vectors, self._last_run_s = await loop.run_in_executor(self._executor, self._timed_encode, pixels)
            except Exception as exc:  # the encoder failing is a bug or a broken model: answer 500, keep serving
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            finally:
                self._in_flight = 0
            self._encode_seconds.observe(self._last_run_s)
            for job, vector in zip(jobs, vectors, strict=True):
                if not job.future.done():
                    job.future.set_result(vector)

    def _timed_encode(self, pixels: np.ndarray) -> tuple[np.ndarray, float]:
        # timed where it runs: a shared executor's queue (another model's batch first) is not encoder time
        started = time.perf_counter()
        vectors = self._encode(pixels)
        return vectors, time.perf_counter() - started

    async def stop(self) -> None:
        """Finish what is queued (for at most `drain_s`), then stop: graceful shutdown drains, it does not drop."""
        if self._task is None or self._queue is None:
            return
        deadline = time.monotonic() + self.drain_s
        while (self._queue.qsize() or self._in_flight) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(NotReady("the service is shutting down"))
        if self._own_executor:
            self._executor.shutdown(wait=True)
