"""MicroBatcher mechanics with a stand-in encode function (no model, no app), and the batching defaults."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import numpy as np
import pytest

from app.core.errors import Overloaded
from app.encode.batcher import MicroBatcher
from tests.factories import RecordingEncode


def mean_colour(pixels: np.ndarray) -> np.ndarray:
    return pixels.reshape(len(pixels), -1, 3).mean(axis=1).astype(np.float32)


def image(value: int) -> np.ndarray:
    return np.full((4, 4, 3), value, dtype=np.uint8)


def test_each_request_gets_its_own_answer_and_batches_stay_under_max() -> None:
    async def scenario() -> tuple[list[np.ndarray], list[int]]:
        encode = RecordingEncode(mean_colour, delay_s=0.01)
        batcher = MicroBatcher(encode, max_batch_size=4, max_wait_ms=5, queue_max=100)
        await batcher.start()
        answers = await asyncio.gather(*(batcher.submit(image(i), timeout_s=10) for i in range(30)))
        await batcher.stop()
        return answers, encode.sizes

    answers, sizes = asyncio.run(scenario())
    assert [int(a[0]) for a in answers] == list(range(30))
    assert max(sizes) <= 4
    assert max(sizes) > 1
    assert sum(sizes) == 30


def test_full_queue_fails_fast_with_overloaded() -> None:
    async def scenario() -> tuple[int, int]:
        encode = RecordingEncode(mean_colour)
        encode.release.clear()  # hold the encoder so the queue fills
        batcher = MicroBatcher(encode, max_batch_size=2, max_wait_ms=0, queue_max=3)
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit(image(i), timeout_s=10)) for i in range(12)]
        await asyncio.sleep(0.2)
        encode.release.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.stop()
        shed = sum(isinstance(o, Overloaded) for o in outcomes)
        served = sum(isinstance(o, np.ndarray) for o in outcomes)
        return shed, served

    shed, served = asyncio.run(scenario())
    assert shed > 0
    assert served > 0
    assert shed + served == 12


def test_expired_work_never_reaches_the_encoder() -> None:
    async def scenario() -> tuple[list[object], list[int]]:
        encode = RecordingEncode(mean_colour)
        encode.release.clear()
        batcher = MicroBatcher(encode, max_batch_size=1, max_wait_ms=0, queue_max=10)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(image(1), timeout_s=10))
        await asyncio.sleep(0.05)  # `first` is now inside the (held) encoder
        late = asyncio.create_task(batcher.submit(image(2), timeout_s=0.01))
        await asyncio.sleep(0.1)
        encode.release.set()
        outcomes = await asyncio.gather(first, late, return_exceptions=True)
        await batcher.stop()
        return list(outcomes), encode.sizes

    outcomes, sizes = asyncio.run(scenario())
    assert isinstance(outcomes[0], np.ndarray)
    assert isinstance(outcomes[1], Overloaded)
    assert sizes == [1]  # only the first image was ever encoded


# ---- announced images (reserve): one batch instead of 1 + (N - 1) -------------------------------------


async def decode_then_submit(batcher: MicroBatcher, value: int, decode_s: float) -> np.ndarray:
    """What the service does: announce the image, decode it (here: a sleep), submit it."""
    with batcher.reserve() as slot:
        await asyncio.sleep(decode_s)
        return await slot.submit(image(value), timeout_s=30)


def test_images_announced_before_a_batch_opens_join_it() -> None:
    # The first image is ready at once, the others decode for much longer than max_wait: without the
    # announcements the batcher would run [0] and then [1..5].
    async def scenario() -> tuple[list[np.ndarray], list[int], int]:
        encode = RecordingEncode(mean_colour)
        batcher = MicroBatcher(encode, max_batch_size=16, max_wait_ms=0, queue_max=100, max_hold_ms=60_000)
        await batcher.start()
        answers = await asyncio.wait_for(
            asyncio.gather(*(decode_then_submit(batcher, i, decode_s=0.03 * i) for i in range(6))), 30
        )
        await batcher.stop()
        return answers, encode.sizes, batcher.announced

    answers, sizes, announced = asyncio.run(scenario())
    assert [int(a[0]) for a in answers] == list(range(6))
    assert sizes == [6]
    assert announced == 0


def test_a_withdrawn_announcement_does_not_hold_the_batch() -> None:
    # A decode that fails (or a request that is cancelled) leaves the reserve() block without
    # submitting; the batch must run without it, long before the (here 60 s) hold cap.
    async def failing_decode(batcher: MicroBatcher) -> None:
        with batcher.reserve():
            await asyncio.sleep(0.05)
            raise ValueError("broken image")

    async def cancelled_decode(batcher: MicroBatcher) -> None:
        with batcher.reserve():
            await asyncio.sleep(3600)

    async def scenario() -> tuple[list[object], list[int], int]:
        encode = RecordingEncode(mean_colour)
        batcher = MicroBatcher(encode, max_batch_size=16, max_wait_ms=0, queue_max=100, max_hold_ms=60_000)
        await batcher.start()
        failing = asyncio.create_task(failing_decode(batcher))
        cancelled = asyncio.create_task(cancelled_decode(batcher))
        good = asyncio.create_task(decode_then_submit(batcher, 7, decode_s=0))
        await asyncio.sleep(0.1)
        cancelled.cancel()
        outcomes = await asyncio.wait_for(asyncio.gather(failing, cancelled, good, return_exceptions=True), 30)
        await batcher.stop()
        return list(outcomes), encode.sizes, batcher.announced

    outcomes, sizes, announced = asyncio.run(scenario())
    assert isinstance(outcomes[0], ValueError)
    assert isinstance(outcomes[1], asyncio.CancelledError)
    assert isinstance(outcomes[2], np.ndarray) and int(outcomes[2][0]) == 7
    assert sizes == [1]
    assert announced == 0


def test_images_announced_after_a_batch_opened_do_not_extend_its_wait() -> None:
    # Only images announced before the batch opened are waited for; otherwise a steady stream of
    # arrivals would hold every batch until the cap.
    async def scenario() -> tuple[list[int], list[int]]:
        encode = RecordingEncode(mean_colour)
        batcher = MicroBatcher(encode, max_batch_size=16, max_wait_ms=0, queue_max=100, max_hold_ms=60_000)
        await batcher.start()
        go = asyncio.Event()
        early = batcher.reserve()
        early_slot = early.__enter__()
        first = asyncio.create_task(batcher.submit(image(1), timeout_s=30))  # opens a batch that waits for `early`
        await asyncio.sleep(0.05)

        async def late() -> np.ndarray:
            with batcher.reserve() as slot:  # announced while the batch is open
                await go.wait()
                return await slot.submit(image(3), timeout_s=30)

        late_task = asyncio.create_task(late())
        await asyncio.sleep(0.05)
        second = asyncio.create_task(early_slot.submit(image(2), timeout_s=30))
        early.__exit__(None, None, None)
        done = await asyncio.wait_for(asyncio.gather(first, second), 30)  # must not wait for `late`
        go.set()
        last = await asyncio.wait_for(late_task, 30)
        await batcher.stop()
        return [int(v[0]) for v in (*done, last)], encode.sizes

    values, sizes = asyncio.run(scenario())
    assert values == [1, 2, 3]
    assert sizes == [2, 1]


def test_announced_images_still_respect_the_batch_limit() -> None:
    async def scenario() -> tuple[list[np.ndarray], list[int]]:
        encode = RecordingEncode(mean_colour, delay_s=0.01)
        batcher = MicroBatcher(encode, max_batch_size=8, max_wait_ms=0, queue_max=100, max_hold_ms=60_000)
        await batcher.start()
        answers = await asyncio.wait_for(
            asyncio.gather(*(decode_then_submit(batcher, i, decode_s=0.002 * i) for i in range(40))), 30
        )
        await batcher.stop()
        return answers, encode.sizes

    answers, sizes = asyncio.run(scenario())
    assert [int(a[0]) for a in answers] == list(range(40))
    assert max(sizes) <= 8
    assert sum(sizes) == 40


def test_the_hold_for_announced_images_is_bounded() -> None:
    batcher = MicroBatcher(mean_colour, max_batch_size=16, max_wait_ms=5, queue_max=10, max_hold_ms=200)
    assert batcher.hold_s() == pytest.approx(0.2)  # no batch run yet: the cap
    batcher._last_run_s = 0.05
    assert batcher.hold_s() == pytest.approx(0.05)  # as long as the last batch took to run
    batcher._last_run_s = 0.001
    assert batcher.hold_s() == pytest.approx(0.005)  # never below max_wait
    batcher._last_run_s = 30
    assert batcher.hold_s() == pytest.approx(0.2)  # never above the cap


def test_batching_defaults_follow_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core.settings import BATCH_DEFAULTS, load_settings

    for name in [k for k in os.environ if k.startswith("LOOKALIKE_")]:
        monkeypatch.delenv(name)
    settings = load_settings()
    assert settings.batch_max_size is None and settings.batch_max_wait_ms is None  # auto
    assert settings.batching("CPUExecutionProvider") == BATCH_DEFAULTS["cpu"] == (16, 50.0)
    assert settings.batching("CUDAExecutionProvider") == BATCH_DEFAULTS["cuda"] == (32, 5.0)
    monkeypatch.setenv("LOOKALIKE_BATCH_MAX_SIZE", "24")
    monkeypatch.setenv("LOOKALIKE_BATCH_MAX_WAIT_MS", "auto")
    settings = load_settings()
    assert settings.batching("CPUExecutionProvider") == (24, 50.0)  # a set value wins over the device default
    assert settings.batching("CUDAExecutionProvider") == (24, 5.0)


def test_batchers_sharing_an_executor_take_turns_and_each_answers_its_own() -> None:
    """Several models on one CPU: their batches run one at a time on the shared encoder thread."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    running, most = 0, 0
    lock = threading.Lock()

    def encode_as(offset: float) -> Callable[[np.ndarray], np.ndarray]:
        def encode(pixels: np.ndarray) -> np.ndarray:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            time.sleep(0.01)
            with lock:
                running -= 1
            return mean_colour(pixels) + offset

        return encode

    async def scenario() -> tuple[list[np.ndarray], list[np.ndarray]]:
        shared = ThreadPoolExecutor(max_workers=1)
        a = MicroBatcher(encode_as(0.0), max_batch_size=4, max_wait_ms=2, queue_max=100, executor=shared)
        b = MicroBatcher(encode_as(1000.0), max_batch_size=4, max_wait_ms=2, queue_max=100, executor=shared)
        await a.start()
        await b.start()
        answers = await asyncio.gather(
            asyncio.gather(*(a.submit(image(i), timeout_s=10) for i in range(12))),
            asyncio.gather(*(b.submit(image(i), timeout_s=10) for i in range(12))),
        )
        await a.stop()
        await b.stop()
        assert not shared._shutdown  # the batchers leave the shared thread to its owner
        shared.shutdown(wait=True)
        return answers[0], answers[1]

    from_a, from_b = asyncio.run(scenario())
    assert [int(x[0]) for x in from_a] == list(range(12))
    assert [int(x[0]) for x in from_b] == [1000 + i for i in range(12)]
    assert most == 1  # never two batches at once
