"""Test data made on the fly: photo-like images, near-duplicates, a loopback image server, an encode recorder."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

from models.photos import encode, photo

__all__ = ["ImageServer", "RecordingEncode", "Route", "encode", "image_server", "near_duplicate", "photo"]


def near_duplicate(data: bytes, crop: float = 0.04, quality: int = 70) -> bytes:
    """The same photo slightly cropped and re-encoded, as a reseller's re-upload would be."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    dx, dy = int(w * crop), int(h * crop)
    return encode(img.crop((dx, dy, w - dx, h - dy)).resize((w, h), Image.BICUBIC), "JPEG", quality=quality)


@dataclass
class Route:
    body: bytes
    status: int = 200
    content_type: str = "image/jpeg"


@dataclass
class ImageServer:
    """A real HTTP server on 127.0.0.1 serving registered routes; counts the requests it got."""

    host: str = "127.0.0.1"
    port: int = 0
    routes: dict[str, Route] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def add(self, path: str, body: bytes, status: int = 200, content_type: str = "image/jpeg") -> str:
        self.routes[path] = Route(body, status, content_type)
        return self.url(path)


@contextmanager
def image_server() -> Iterator[ImageServer]:
    state = ImageServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits.append(self.path)
            route = state.routes.get(self.path, Route(b"not found", 404, "text/plain"))
            self.send_response(route.status)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


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
