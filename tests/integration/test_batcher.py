"""Batching of concurrent writes through the real app and the real encoder (the mechanics: tests/unit)."""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.encode.encoder import OnnxImageEncoder
from tests.factories import RecordingEncode, photo


@pytest.mark.parametrize("store_kind", ["edge"], indirect=True)
def test_concurrent_writes_are_batched_through_the_real_encoder(
    client_factory, tiny_encoder: OnnxImageEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = RecordingEncode(tiny_encoder.embed, delay_s=0.02)
    monkeypatch.setattr(tiny_encoder, "embed", recorder)
    with client_factory(batch_max_size=4, batch_max_wait_ms=20) as client:
        recorder.sizes.clear()  # forget the warm-up runs
        before = batch_size_buckets(client.get("/metrics").text)
        bodies = [{"item_id": f"c{i}", "image_base64": base64.b64encode(photo(i, size=64)).decode()} for i in range(24)]
        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(lambda b: client.post("/items", json=b).status_code, bodies))
        assert statuses == [201] * 24
        assert sum(recorder.sizes) == 24
        assert max(recorder.sizes) > 1
        assert max(recorder.sizes) <= 4
        # the histogram counted exactly these batches, each in its bucket (buckets are exported even when empty)
        after = batch_size_buckets(client.get("/metrics").text)
        grown = {le: after[le] - before.get(le, 0.0) for le in after}
        assert grown["+Inf"] == len(recorder.sizes)
        for le in ("1.0", "2.0", "4.0"):
            assert grown[le] == sum(size <= float(le) for size in recorder.sizes), (le, recorder.sizes, grown)


def batch_size_buckets(text: str) -> dict[str, float]:
    """lookalike_batch_size's cumulative bucket counts {le: count}, summed over model versions."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "lookalike_batch_size_bucket":
                le = sample.labels["le"]
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return buckets


@pytest.mark.parametrize("store_kind", ["edge"], indirect=True)
def test_a_batch_request_is_encoded_in_one_run_even_without_a_wait(
    client_factory, tiny_encoder: OnnxImageEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # POST /items/batch admits all its images at once; their decodes (made slow here) finish one
    # after another, long after BATCH_MAX_WAIT_MS=0, and still all of them go in one encoder run.
    import app.service.embedding

    real_load = app.service.embedding.load_pixels_for
    lock = threading.Lock()
    calls = [0]

    def slow_load(*args, **kwargs):
        with lock:
            calls[0] += 1
            n = calls[0]
        time.sleep(0.02 * n)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(app.service.embedding, "load_pixels_for", slow_load)
    recorder = RecordingEncode(tiny_encoder.embed)
    monkeypatch.setattr(tiny_encoder, "embed", recorder)
    with client_factory(batch_max_wait_ms=0) as client:
        recorder.sizes.clear()
        items = [{"item_id": f"b{i}", "image_base64": base64.b64encode(photo(i, size=64)).decode()} for i in range(6)]
        items.append({"item_id": "broken", "image_base64": base64.b64encode(b"\xff\xd8\xff not a jpeg").decode()})
        response = client.post("/items/batch", json={"items": items})
        assert response.status_code == 200
        assert [r["status"] for r in response.json()["results"]] == [201] * 6 + [422]
        assert recorder.sizes == [6]
        assert client.app.state.services.items.batcher.announced == 0  # type: ignore[attr-defined]
