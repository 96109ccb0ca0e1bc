"""The demo's service: `python -m app` on loopback over one temporary store, and the photos it fetches."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from app.demo.processes import Children, DemoError, say

START_TIMEOUT_S = 600  # a real SigLIP model on a slow CPU takes a while to load and warm up
BACKFILL_TIMEOUT_S = 1800


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _PhotoServer(ThreadingHTTPServer):
    # The service fetches a whole batch of photos at once; socketserver's default backlog of 5 would
    # drop most of those connections and leave them to SYN retries (seconds each).
    request_queue_size = 256
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a fetch the service gave up on
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextmanager
def photo_server(root: Path) -> Iterator[str]:
    """Serve `root` read-only on 127.0.0.1 (a free port); yields its base URL."""
    server = _PhotoServer(("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, name="demo-photos", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def items_by_url(catalog: Path, photos_url: str, out: Path) -> Path:
    """The catalog's items.jsonl with each photo path turned into its URL on the photo server."""
    with (catalog / "items.jsonl").open(encoding="utf-8") as src, out.open("w", encoding="utf-8") as dst:
        for line in src:
            if line.strip():
                item = json.loads(line)
                item["image"] = f"{photos_url}/{item['image']}"
                dst.write(json.dumps(item) + "\n")
    return out


class DemoService:
    """`python -m app` on 127.0.0.1:`port` over the store folder `store`; restarted to change its models."""

    def __init__(self, children: Children, port: int, store: Path, api_key: str | None) -> None:
        self.children, self.port, self.store, self.api_key = children, port, store, api_key
        self.url = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.process: subprocess.Popen[Any] | None = None
        self.events_secret = secrets.token_hex(32)  # one replica: any secret, the same across restarts

    def start(self, *models: Path) -> None:
        """(Re)start the service with these model files; the first serves when the store is new."""
        if self.process is not None:
            say("restarting the service with both model files ...")
            self.children.stop(self.process)
        env = {
            **os.environ,
            "LOOKALIKE_MODEL_PATH": ",".join(str(m) for m in models),
            "LOOKALIKE_QDRANT_PATH": str(self.store),
            "LOOKALIKE_HOST": "127.0.0.1",
            "LOOKALIKE_PORT": str(self.port),
            "LOOKALIKE_FETCH_ALLOW_PRIVATE": "true",  # the photos are on loopback: demo only
        }
        env.setdefault("LOOKALIKE_EVENTS_SECRET", self.events_secret)
        env.setdefault("LOOKALIKE_LOG_LEVEL", "warning")  # not a line per photo fetched
        env.pop("LOOKALIKE_QDRANT_URL", None)  # a fresh embedded store, never someone's server
        say(f"starting the service on {self.url} ...")
        self.process = self.children.start([sys.executable, "-m", "app"], env=env)
        self._wait_ready(self.process)

    def _wait_ready(self, process: subprocess.Popen[Any]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DemoError(f"the service exited with code {process.returncode} (its message is above)")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise DemoError(f"the service did not become ready within {START_TIMEOUT_S} s")

    def index(self, jsonl: Path) -> tuple[int, int]:
        """POST /items/batch for every line of `jsonl`: (indexed, failed)."""
        from app.cli.index import http_sender, index_file  # the CLI's indexer, with its progress bar

        async def run() -> tuple[int, int]:
            async with http_sender(self.url, self.api_key) as send:
                return await index_file(jsonl, send, 32)

        say("indexing the catalog by URL (the service fetches each photo from the photo server) ...")
        return asyncio.run(run())

    def _call(self, method: str, path: str) -> dict[str, Any]:
        response = httpx.request(method, self.url + path, headers=self.headers, timeout=60)
        if response.status_code >= 300:
            raise DemoError(f"{method} {path} answered {response.status_code}: {response.text[:300]}")
        return dict(response.json())

    def backfill(self, version: str) -> None:
        """Start the backfill of `version`'s vectors for every item indexed before it was added."""
        say(f"backfilling {version}'s vectors for the indexed items (POST /models/{version}/backfill) ...")
        self._call("POST", f"/models/{version}/backfill")

    def backfilled(self, version: str) -> dict[str, Any]:
        """Wait for the running backfill of `version`; its final status (DemoError unless it is done)."""
        deadline = time.monotonic() + BACKFILL_TIMEOUT_S
        while (status := self._call("GET", f"/models/{version}/backfill"))["state"] == "running":
            if time.monotonic() > deadline:
                raise DemoError(f"the backfill of {version} did not end within {BACKFILL_TIMEOUT_S} s")
            time.sleep(0.5)
        if status["state"] != "done":
            raise DemoError(f"the backfill of {version} ended {status['state']}: {status.get('error')}")
        return status

    def promote(self, version: str) -> None:
        self._call("POST", f"/models/{version}/promote")
        say(f"promoted {version}: it serves /similar and the page now")

    def serve(self) -> None:
        """Until Ctrl-C (KeyboardInterrupt) or the service's own exit (an error)."""
        assert self.process is not None
        code = self.process.wait()
        raise DemoError(f"the service exited with code {code} (its message is above)")
