"""MicroBatcher mechanics and batching of concurrent writes through the real app."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.batcher import MicroBatcher
from app.encoder import OnnxImageEncoder
from app.errors import Overloaded
from tests.factories import photo


class RecordingEncode:
    """Wraps a real encode function and records the batch sizes it was called with."""

    def __init__(self, encode, delay_s: float = 0.0) -> None:
        self.encode = encode
        self.delay_s = delay_s
        self.sizes: list[int] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        self.release.wait(10)
        self.sizes.append(len(pixels))
        time.sleep(self.delay_s)
        return self.encode(pixels)


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


@pytest.mark.parametrize("store_kind", ["edge"], indirect=True)
def test_concurrent_writes_are_batched_through_the_real_encoder(
    client_factory, tiny_encoder: OnnxImageEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = RecordingEncode(tiny_encoder.embed, delay_s=0.02)
    monkeypatch.setattr(tiny_encoder, "embed", recorder)
    with client_factory(batch_max_size=4, batch_max_wait_ms=20) as client:
        recorder.sizes.clear()  # forget the warm-up runs
        bodies = [{"item_id": f"c{i}", "image_base64": base64.b64encode(photo(i, size=64)).decode()} for i in range(24)]
        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(lambda b: client.post("/items", json=b).status_code, bodies))
        assert statuses == [201] * 24
        assert sum(recorder.sizes) == 24
        assert max(recorder.sizes) > 1
        assert max(recorder.sizes) <= 4
        text = client.get("/metrics").text
        assert "lookalike_batch_size_bucket" in text
