"""Graceful shutdown: SIGTERM under write load. Requests in flight finish with 2xx
(none is reset, none gets a 5xx), new connections are refused, the store is flushed and closed, the
process exits 0 well within its shutdown budget (Settings.shutdown_budget_s()), and every acknowledged
write is there after a restart."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from tests.factories import photo
from tests.hardening import WriteLoad, missing_items, wait_until
from tests.live import live_server

HELD = 6  # writes held at the image host while SIGTERM arrives: in flight by construction


@contextmanager
def held_image_host(release: threading.Event) -> Iterator[tuple[str, list[str]]]:
    """An image host that answers only once `release` is set (a slow CDN, on loopback)."""
    hits: list[str] = []
    body = photo(42)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            release.wait(60)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def refuses_connections(url: str) -> bool:
    try:
        httpx.get(url + "/healthz", timeout=2)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


def test_sigterm_under_load_finishes_in_flight_writes_and_exits_0(tiny_model_path: Path, tmp_path: Path) -> None:
    env = {
        "LOOKALIKE_MODEL_PATH": str(tiny_model_path),
        "LOOKALIKE_QDRANT_PATH": str(tmp_path / "qdrant"),
        "LOOKALIKE_FETCH_ALLOW_PRIVATE": "true",  # the held image host is on loopback
        "LOOKALIKE_FETCH_TIMEOUT_S": "30",
        "LOOKALIKE_LOG_LEVEL": "warning",
    }
    release = threading.Event()
    with held_image_host(release) as (host, hits), live_server(env) as server, ThreadPoolExecutor(HELD) as pool:
        load = WriteLoad(server.url, [photo(i, size=64) for i in range(4)], "bg", threads=2).start()
        wait_until(lambda: len(load.acked) >= 5, timeout_s=60, what="background writes")
        held = [
            pool.submit(
                httpx.post,
                server.url + "/items",
                json={"item_id": f"held-{i}", "image_url": f"{host}/{i}.jpg"},
                timeout=60,
            )
            for i in range(HELD)
        ]
        wait_until(lambda: len(hits) == HELD, what="every held write inside the server")

        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: refuses_connections(server.url), what="listener closed after SIGTERM")
        release.set()  # the slow image host answers now, after the shutdown began
        answers = [f.result(timeout=60) for f in held]
        exit_code = server.process.wait(timeout=30)
        took = time.monotonic() - signalled
        load.stop()

        assert [a.status_code for a in answers] == [201] * HELD, [a.text for a in answers]
        assert exit_code == 0, server.log()
        assert load.server_errors() == []
        assert load.broken == [], load.broken  # no request the server accepted was cut off
    acked = [f"held-{i}" for i in range(HELD)] + load.acked
    with live_server(env) as restarted:
        lost = missing_items(restarted.url, acked)
    print(
        f"SIGTERM under load: {HELD} held + {len(load.answers)} background writes answered, "
        f"{len(load.refused)} refused after the listener closed, exit 0 after {took:.1f} s, {len(lost)} lost"
    )
    assert lost == []
