"""Admission control: a full encoder queue answers 429 + Retry-After at once, expired
work never reaches the encoder, /readyz is 503 while saturated and 200 again once drained, and a live
server under a write storm with a tiny queue answers only 201 or 429 (never a 5xx)."""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.encode.encoder import OnnxImageEncoder
from tests.factories import photo
from tests.hardening import SCALE, WriteLoad, assert_error, b64, missing_items, open_app, wait_until
from tests.live import live_server

PHOTOS = [b64(photo(i, size=96)) for i in range(4)]


class HeldEncoder:
    """The real tiny encoder behind a gate the test holds: 'the encoder is busy' for exactly as long as
    the test needs, without a sleep or a fake model. Everything else is the real encoder."""

    def __init__(self, real: OnnxImageEncoder) -> None:
        self._real = real
        self.gate = threading.Event()
        self.gate.set()  # open until a test closes it
        self.entered = 0
        self.batches: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        self.entered += 1
        self.gate.wait(60)
        self.batches.append(len(pixels))
        return self._real.embed(pixels)


def post(client: TestClient, item_id: str) -> Any:
    return client.post("/items", json={"item_id": item_id, "image_base64": PHOTOS[len(item_id) % len(PHOTOS)]})


def test_full_queue_sheds_at_once_and_readiness_follows(
    tmp_path: Path, tiny_model_path: Path, tiny_encoder: OnnxImageEncoder
) -> None:
    held = HeldEncoder(tiny_encoder)
    settings = {"queue_max": 2, "batch_max_size": 1, "request_timeout_s": 60}
    with open_app(tmp_path, tiny_model_path, held, **settings) as client, ThreadPoolExecutor(4) as pool:  # type: ignore[arg-type]
        batcher = client.app.state.services.items.batcher  # type: ignore[attr-defined]
        assert client.get("/readyz").status_code == 200
        assert post(client, "seed").status_code == 201  # an item to read while writes are shed
        held.gate.clear()
        held.entered = 0
        waiting: list[Future[Any]] = [pool.submit(post, client, f"in-{i}") for i in range(3)]
        wait_until(lambda: held.entered == 1 and batcher.depth == 2, what="encoder busy and queue full")

        assert_error(client.get("/readyz"), 503, "not_ready")
        shed_s = []
        for i in range(40):
            started = time.perf_counter()
            response = post(client, f"shed-{i}")
            shed_s.append(time.perf_counter() - started)
            assert_error(response, 429, "overloaded")
        batch = client.post("/items/batch", json={"items": [{"item_id": "shed-b", "image_base64": PHOTOS[0]}]})
        assert batch.json()["results"][0]["status"] == 429
        assert client.get("/similar/seed").status_code == 200  # reads are not behind the encoder

        held.gate.set()
        assert [f.result(timeout=60).status_code for f in waiting] == [201, 201, 201]
        wait_until(lambda: client.get("/readyz").status_code == 200, what="ready again after draining")
        for i in range(40):
            assert client.get(f"/items/shed-{i}").status_code == 404
        assert client.get("/items/shed-b").status_code == 404
        assert all(client.get(f"/items/in-{i}").status_code == 200 for i in range(3))
    print(
        f"shed latency over {len(shed_s)} requests: median {statistics.median(shed_s) * 1000:.1f} ms, "
        f"max {max(shed_s) * 1000:.1f} ms"
    )


def test_expired_work_never_reaches_the_encoder(
    tmp_path: Path, tiny_model_path: Path, tiny_encoder: OnnxImageEncoder
) -> None:
    held = HeldEncoder(tiny_encoder)
    with (
        open_app(tmp_path, tiny_model_path, held, queue_max=4, batch_max_size=1, request_timeout_s=0.5) as client,  # type: ignore[arg-type]
        ThreadPoolExecutor(2) as pool,
    ):
        batcher = client.app.state.services.items.batcher  # type: ignore[attr-defined]
        held.gate.clear()
        held.entered = 0
        running, queued = pool.submit(post, client, "late-1"), None
        wait_until(lambda: held.entered == 1, what="first image in the encoder")
        queued = pool.submit(post, client, "late-2")
        wait_until(lambda: batcher.depth == 1, what="second image queued")
        for future in (running, queued):  # both pass their deadline while the encoder is held
            assert_error(future.result(timeout=30), 429, "overloaded")
        batches_before = len(held.batches)
        held.gate.set()
        assert post(client, "on-time").status_code == 201
        # the held batch finished (its answer dropped), the expired queued image was never encoded
        assert len(held.batches) == batches_before + 2
        assert held.entered == 2
        assert client.get("/items/late-1").status_code == 404
        assert client.get("/items/late-2").status_code == 404


def test_live_write_storm_with_a_tiny_queue_gets_201_or_429_only(
    tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {
        "LOOKALIKE_MODEL_PATH": str(tiny_model_path),
        "LOOKALIKE_QDRANT_PATH": str(tmp_path_factory.mktemp("storm")),
        "LOOKALIKE_QUEUE_MAX": "1",
        "LOOKALIKE_BATCH_MAX_SIZE": "1",
        "LOOKALIKE_BATCH_MAX_WAIT_MS": "0",
        "LOOKALIKE_LOG_LEVEL": "warning",
    }
    images = [photo(i, size=384, fmt="PNG") for i in range(4)]
    with live_server(env) as server:
        load = WriteLoad(server.url, images, "storm", threads=12).start()
        wait_until(lambda: len(load.answers) >= 200 * SCALE, timeout_s=120 * SCALE, what="answers")
        load.stop()
        statuses = sorted({status for _, status in load.answers})
        shed = [item_id for item_id, status in load.answers if status == 429]
        assert set(statuses) <= {201, 429}, statuses
        assert load.broken == [] and load.refused == []
        assert missing_items(server.url, load.acked) == []
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert all(client.get(f"/items/{i}").status_code == 404 for i in shed)
            assert client.get("/readyz").status_code == 200
    shed_s = sorted(load.seconds.get(429, [0.0]))
    print(
        f"write storm: {len(load.answers)} answers, {len(load.acked)} x 201, {len(shed)} x 429, 0 x 5xx; "
        f"429 latency median {statistics.median(shed_s) * 1000:.0f} ms, max {shed_s[-1] * 1000:.0f} ms"
    )


def test_image_permits_refuse_at_once_and_a_batch_is_admitted_item_by_item(
    tmp_path: Path, tiny_model_path: Path, tiny_encoder: OnnxImageEncoder
) -> None:
    # ADMISSION_IMAGES=3: three images held in the write path (one in the encoder, two queued behind
    # it) take every permit; a fourth write is refused before its image is decoded, and a batch gets
    # one permit per item, in order, with its own 429 for each item beyond them.
    held = HeldEncoder(tiny_encoder)
    settings = {"admission_images": 3, "queue_max": 100, "batch_max_size": 1, "request_timeout_s": 60}
    with open_app(tmp_path, tiny_model_path, held, **settings) as client, ThreadPoolExecutor(4) as pool:  # type: ignore[arg-type]
        service = client.app.state.services.items  # type: ignore[attr-defined]
        assert service.image_permits.capacity == 3
        held.gate.clear()
        held.entered = 0
        waiting = [pool.submit(post, client, f"in-{i}") for i in range(2)]
        wait_until(lambda: held.entered == 1 and service.batcher.depth == 1, what="two images in the write path")
        assert service.image_permits.in_use == 2
        metrics_text = client.get("/metrics").text
        assert 'lookalike_admission_in_use{resource="images"} 2.0' in metrics_text

        items = [{"item_id": f"b-{i}", "image_base64": PHOTOS[i % len(PHOTOS)]} for i in range(3)]
        batch = pool.submit(client.post, "/items/batch", json={"items": items})
        wait_until(lambda: service.batcher.depth == 2, what="the batch's one admitted item queued")
        assert_error(post(client, "refused"), 429, "overloaded")
        assert service.batcher.depth == 2  # the refused image never reached the queue

        held.gate.set()
        assert [f.result(timeout=60).status_code for f in waiting] == [201, 201]
        results = batch.result(timeout=60).json()["results"]
        assert [r["status"] for r in results] == [201, 429, 429]
        assert {r["error"]["code"] for r in results[1:]} == {"overloaded"}
        assert service.image_permits.in_use == 0
        assert client.get("/items/b-0").status_code == 200
        assert all(client.get(f"/items/{i}").status_code == 404 for i in ("b-1", "b-2", "refused"))
        assert post(client, "after").status_code == 201  # permits came back


def test_request_bodies_in_memory_are_bounded_and_refused_before_they_are_read(
    tmp_path: Path, tiny_model_path: Path, tiny_encoder: OnnxImageEncoder
) -> None:
    # ADMISSION_BODY_BYTES = one and a half bodies: while one upload is held inside the service, a
    # second one is answered 429 before it is read (declared length, and chunked without a length),
    # small requests still pass, and once the first is answered the budget is free again.
    held = HeldEncoder(tiny_encoder)

    def upload(item_id: str) -> Any:
        return client.post("/items", json={"item_id": item_id, "image_base64": PHOTOS[0]})

    budget = len(PHOTOS[0]) * 3 // 2
    limits = {"request_max_bytes": budget, "admission_body_bytes": budget, "request_timeout_s": 60}
    with open_app(tmp_path, tiny_model_path, held, **limits) as client, ThreadPoolExecutor(2) as pool:  # type: ignore[arg-type]
        assert upload("seed").status_code == 201
        held.gate.clear()
        held.entered = 0
        first = pool.submit(upload, "first")
        wait_until(lambda: held.entered == 1, what="the first upload inside the encoder")

        assert_error(upload("second"), 429, "overloaded")
        chunked = (part for part in (b'{"item_id": "third", "image_base64": "', PHOTOS[0].encode(), b'"}'))
        refused = client.post("/items", content=chunked, headers={"content-type": "application/json"})
        assert_error(refused, 429, "overloaded")
        assert client.get("/items/seed").status_code == 200  # no body: not behind the budget
        assert client.patch("/items/seed", json={"price": 3}).status_code == 200  # a small body fits

        held.gate.set()
        assert first.result(timeout=60).status_code == 201
        assert client.get("/items/second").status_code == 404
        assert client.get("/items/third").status_code == 404
        assert upload("fourth").status_code == 201
        metrics_text = client.get("/metrics").text
        assert 'lookalike_admission_in_use{resource="body_bytes"} 0.0' in metrics_text


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body, read from a raw socket (bounded by its timeout)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a response body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def test_live_body_budget_answers_429_on_an_open_connection(
    tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A real server whose body budget one upload fills: the upload is held half-sent, so its bytes are
    # taken. A second upload that waits for `100 Continue` gets its 429 at once, without sending its body;
    # a third that sends its body gets the 429 once it has sent it, on a connection that stays usable.
    size = 150_000
    env = {
        "LOOKALIKE_MODEL_PATH": str(tiny_model_path),
        "LOOKALIKE_QDRANT_PATH": str(tmp_path_factory.mktemp("bodies")),
        "LOOKALIKE_REQUEST_MAX_BYTES": "200000",
        "LOOKALIKE_ADMISSION_BODY_BYTES": "200000",
        "LOOKALIKE_LOG_LEVEL": "warning",
    }

    def head(extra: str = "") -> bytes:
        return (
            f"POST /items HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n{extra}\r\n"
        ).encode()

    with live_server(env) as server:
        port = httpx.URL(server.url).port
        assert port is not None
        with (
            socket.create_connection(("127.0.0.1", port), timeout=30) as holder,
            socket.create_connection(("127.0.0.1", port), timeout=30) as waiting,
            socket.create_connection(("127.0.0.1", port), timeout=30) as sender,
        ):
            holder.sendall(head() + b"{" * 1000)  # declared 150 kB, sent 1 kB: the budget is taken
            wait_until(
                lambda: (
                    'lookalike_admission_in_use{resource="body_bytes"} 150000.0'
                    in httpx.get(server.url + "/metrics", timeout=10).text
                ),
                what="the held upload's bytes taken",
            )
            waiting.sendall(head("Expect: 100-continue\r\n"))
            status, headers, body = read_response(waiting)
            assert (status, headers["retry-after"]) == (429, "1")
            assert json.loads(body)["error"]["code"] == "overloaded"

            sender.sendall(head() + b" " * size)
            status, headers, body = read_response(sender)
            assert (status, headers["retry-after"]) == (429, "1")
            assert json.loads(body)["error"]["code"] == "overloaded"
            sender.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")  # same connection, still open
            assert read_response(sender)[0] == 200

            holder.sendall(b"{" * (size - 1000))  # the held upload completes: malformed JSON, 400
            assert read_response(holder)[0] == 400
        metrics_text = httpx.get(server.url + "/metrics", timeout=10).text
        assert 'lookalike_admission_in_use{resource="body_bytes"} 0.0' in metrics_text
