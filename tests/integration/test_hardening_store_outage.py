"""Store outages in server mode: Qdrant unreachable, hanging or answering garbage gives
503 store_unavailable + Retry-After within bounded time, /readyz turns 503, /healthz stays 200, and the
service recovers when Qdrant is back, without a restart.

How this is tested, honestly: there is no Qdrant server binary on these machines. The outages are
real: the real qdrant-client talks HTTP to real loopback sockets that refuse, hang, or answer bytes
that are not Qdrant's. "Qdrant is back" is the one simulated step: the store's client is pointed back
at a qdrant-client local-mode instance that holds the data (the same engine the server tests use).
What this proves is our side of recovery (timeouts, the circuit breaker, readiness); qdrant-client's
own reconnection to a real server coming back is not exercised here.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from qdrant_client import QdrantClient

from app.encode.encoder import OnnxImageEncoder
from app.http.app import create_app
from app.store.qdrant_server import ServerStore
from tests.conftest import make_settings
from tests.factories import photo
from tests.hardening import assert_error, b64, wait_until

ANSWERS = {
    "garbage": b"\x00\x01 not HTTP at all\r\n\r\n",
    "json_not_qdrant": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    "not_json": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nnope!",
    "http_500": b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
    "http_503": b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
}
OUTAGES = ["refused", "hang", *ANSWERS]


@contextmanager
def broken_qdrant(kind: str) -> Iterator[str]:
    """A loopback address where 'Qdrant' refuses connections, hangs, or answers `ANSWERS[kind]`."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    if kind == "refused":
        sock.close()  # nothing listens there any more
        yield url
        return
    sock.listen(64)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            if kind == "hang":
                held.append(conn)  # accepted, read, never answered
                continue
            try:
                conn.recv(65536)
                conn.sendall(ANSWERS[kind])
            except OSError:
                pass
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield url
    finally:
        stop.set()
        sock.close()
        for conn in held:
            conn.close()


@pytest.mark.parametrize("kind", OUTAGES)
def test_store_outage_is_503_then_recovers_without_restart(
    kind: str, tmp_path: Path, tiny_model_path: Path, tiny_encoder: OnnxImageEncoder
) -> None:
    healthy = QdrantClient(":memory:")
    store = ServerStore(healthy, "items")
    settings = make_settings(tmp_path, tiny_model_path, qdrant_timeout_s=1.0)
    with TestClient(create_app(settings, encoder=tiny_encoder, store=store)) as client:
        assert client.post("/items", json={"item_id": "a", "image_base64": b64(photo(1))}).status_code == 201

        with broken_qdrant(kind) as url:
            store._client = QdrantClient(url=url, timeout=1, check_compatibility=False)  # Qdrant goes away
            calls = [
                ("GET", "/items/a", {}),
                ("GET", "/similar/a", {}),
                ("POST", "/items", {"json": {"item_id": "b", "image_base64": b64(photo(2))}}),
                ("POST", "/items/batch", {"json": {"items": [{"item_id": "c", "image_base64": b64(photo(3))}]}}),
                ("PATCH", "/items/a", {"json": {"title": "changed"}}),
                ("DELETE", "/items/a", {}),
            ]
            slowest = 0.0
            for _ in range(2):  # the second round meets the open circuit breaker: fails fast
                for method, path, kwargs in calls:
                    started = time.monotonic()
                    response = client.request(method, path, **kwargs)
                    slowest = max(slowest, time.monotonic() - started)
                    if path == "/items/batch":
                        result = response.json()["results"][0]
                        assert (result["status"], result["error"]["code"]) == (503, "store_unavailable")
                    else:
                        assert_error(response, 503, "store_unavailable")
            assert_error(client.get("/readyz"), 503, "not_ready")
            assert client.get("/healthz").status_code == 200
            store._client.close()

        store._client = healthy  # Qdrant is back, with its data
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout_s=15, what="ready again")
        assert client.get("/items/a").json().get("title") is None  # the PATCH during the outage did nothing
        assert client.get("/items/b").status_code == 404  # nor did the refused write
        assert client.post("/items", json={"item_id": "b", "image_base64": b64(photo(2))}).status_code == 201
        assert client.get("/similar/a").json()["results"][0]["item_id"] == "b"
    print(f"store outage {kind}: 503 store_unavailable, slowest answer {slowest:.2f} s")
