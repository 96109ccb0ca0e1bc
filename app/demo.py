"""`lookalike demo`: a generated catalog, its photos on a loopback port, the service, indexed, in one command.

1. Builds (once, cached under --data) a stand-in catalog with the project's generator (models/catalog.py).
2. Serves its photos from 127.0.0.1 on a free port (a plain static file server).
3. Starts `python -m app` with the configured model; when LOOKALIKE_MODEL_PATH is missing it exports
   the tiny model with random weights first (the page then shows a banner: rankings mean nothing).
   The demo's store is a fresh temporary folder, and FETCH_ALLOW_PRIVATE is set for this service only,
   so it may fetch the photos from the loopback server.
4. Indexes every item by URL (POST /items/batch), so GET /items/{id}/image can show the real photo.
5. Prints the page's address and runs until Ctrl-C.

The generator and the exporter live in models/ (the `train` extra); they run as child processes.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from app.core.settings import load_settings

CATALOG_SEED = 7
START_TIMEOUT_S = 600  # a real SigLIP model on a slow CPU takes a while to load and warm up


def say(message: str) -> None:
    print(f"lookalike demo: {message}", file=sys.stderr, flush=True)


def training_tool(module: str, *args: str) -> None:
    """Run a models/ tool (the `train` extra) in a child process: the service side never imports it."""
    result = subprocess.run([sys.executable, "-m", module, *args], check=False)
    if result.returncode != 0:
        raise SystemExit(
            f"lookalike demo: `python -m {module}` exited with {result.returncode} (its messages are above); "
            "the demo needs the train extra: pip install -e '.[train]'"
        )


def demo_catalog(data: Path, items: int) -> Path:
    out = data / f"catalog-{items}-seed{CATALOG_SEED}"
    if (out / "items.jsonl").is_file() and (out / "manifest.json").is_file():
        return out
    say(f"generating a stand-in catalog of {items} items in {out} (generated data, not a real marketplace)")
    training_tool("models.catalog", "--out", str(out), "--items", str(items), "--seed", str(CATALOG_SEED))
    return out


def demo_model(data: Path) -> tuple[Path, bool]:
    """The configured model, or (when that file is missing) the tiny random-weight model, exported once."""
    configured = load_settings().model_path[0]  # the demo serves one model: the first configured
    if configured.is_file():
        return configured, False
    tiny = data / "tiny-random.onnx"
    if not tiny.is_file():
        say(f"no model at {configured}: exporting the tiny model with RANDOM weights to {tiny}")
        training_tool("models.export", "--config", "tiny", "--seed", "0", "--out", str(tiny))
    say(f"using {tiny}: random weights, so the look-alikes are not meaningful (the page says so)")
    return tiny, True


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


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with code {process.returncode} (its message is above)")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the service did not become ready within {START_TIMEOUT_S} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def run_demo(items: int, port: int, data: Path) -> int:
    from app.cli.index import http_sender, index_file

    data.mkdir(parents=True, exist_ok=True)
    catalog = demo_catalog(data, items)
    model_path, _ = demo_model(data)
    api_key = load_settings().api_key
    store_dir = Path(tempfile.mkdtemp(prefix="lookalike-demo-"))
    try:
        with photo_server(catalog) as photos_url:
            say(f"serving the catalog's photos at {photos_url}/images/")
            env = {
                **os.environ,
                "LOOKALIKE_MODEL_PATH": str(model_path),
                "LOOKALIKE_QDRANT_PATH": str(store_dir),
                "LOOKALIKE_HOST": "127.0.0.1",
                "LOOKALIKE_PORT": str(port),
                "LOOKALIKE_FETCH_ALLOW_PRIVATE": "true",  # the photos are on loopback: demo only
            }
            env.setdefault("LOOKALIKE_LOG_LEVEL", "warning")  # not a line per photo fetched
            env.pop("LOOKALIKE_QDRANT_URL", None)  # a fresh embedded store, never someone's server
            url = f"http://127.0.0.1:{port}"
            say(f"starting the service on {url} ...")
            process = subprocess.Popen([sys.executable, "-m", "app"], env=env)
            try:
                wait_ready(url, process)
                jsonl = items_by_url(catalog, photos_url, store_dir / "items.jsonl")
                key = api_key.get_secret_value() if api_key else None

                async def index() -> tuple[int, int]:
                    async with http_sender(url, key) as send:
                        return await index_file(jsonl, send, 32)

                ok, failed = asyncio.run(index())
                say(f"indexed {ok} items ({failed} failed)")
                print(f"\n  Open the page: {url}/\n  API docs:      {url}/docs\n  Ctrl-C stops.\n", flush=True)
                process.wait()
            except KeyboardInterrupt:
                say("stopping ...")
            finally:
                stop(process)
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)
    return 0
