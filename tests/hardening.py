"""Helpers shared by the tests/integration/test_hardening_*.py files."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from app.encode.encoder import OnnxImageEncoder
from app.http.app import create_app
from app.store.base import VectorStore
from tests.conftest import make_settings, make_store

# HARDENING_SCALE=N multiplies the kill -9 rounds, schemathesis examples and storm size (default 1:
# the whole set in a few minutes on 2 cores); docs/reliability.md records a run with a larger N.
SCALE = max(1, int(os.environ.get("HARDENING_SCALE", "1")))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    if status in (429, 503):
        assert int(response.headers["retry-after"]) >= 1


@contextmanager
def open_app(
    tmp_path: Path, model_path: Path, encoder: OnnxImageEncoder, store_kind: str = "server", **overrides: object
) -> Iterator[TestClient]:
    """The real app (lifespan running) on a fresh store; for module-scoped fixtures."""
    settings = make_settings(tmp_path, model_path, **overrides)
    store: VectorStore = make_store(store_kind, settings)
    try:
        with TestClient(create_app(settings, encoder=encoder, store=store)) as client:
            yield client
    finally:
        store.close()


def wait_until(predicate: Callable[[], bool], timeout_s: float = 30, what: str = "condition") -> None:
    """Bounded polling: never a fixed sleep standing in for a synchronisation."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout_s} s")


@dataclass
class WriteLoad:
    """Writer threads posting distinct items to a live server until stopped; records every outcome.

    Each request uses a fresh connection, so a request either reaches the server whole or fails to
    connect: an answer that never came back is then a real failure of a request the server accepted.
    """

    url: str
    images: list[bytes]
    prefix: str
    threads: int = 3
    acked: list[str] = field(default_factory=list)  # item ids answered 2xx
    answers: list[tuple[str, int]] = field(default_factory=list)  # (item id, status) of every answer
    seconds: dict[int, list[float]] = field(default_factory=dict)  # status -> latencies
    refused: list[str] = field(default_factory=list)  # connection refused: never reached the server
    broken: list[tuple[str, str]] = field(default_factory=list)  # sent, then no answer (reset, ...)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self, worker: int) -> None:
        n = 0
        while not self._stop.is_set():
            item_id = f"{self.prefix}-{worker}-{n}"
            body = {"item_id": item_id, "image_base64": b64(self.images[n % len(self.images)])}
            n += 1
            try:
                with httpx.Client(timeout=60) as client:
                    started = time.perf_counter()
                    status = client.post(self.url + "/items", json=body).status_code
                    took = time.perf_counter() - started
            except httpx.ConnectError:
                with self._lock:
                    self.refused.append(item_id)
                time.sleep(0.05)
                continue
            except httpx.HTTPError as exc:
                with self._lock:
                    self.broken.append((item_id, type(exc).__name__))
                continue
            with self._lock:
                self.answers.append((item_id, status))
                self.seconds.setdefault(status, []).append(took)
                if 200 <= status < 300:
                    self.acked.append(item_id)

    def start(self) -> WriteLoad:
        self._workers = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=90)

    def server_errors(self) -> list[tuple[str, int]]:
        return [(item_id, status) for item_id, status in self.answers if status >= 500]


def missing_items(url: str, item_ids: list[str]) -> list[str]:
    with httpx.Client(base_url=url, timeout=30) as client:
        return [i for i in item_ids if client.get(f"/items/{i}").status_code != 200]
