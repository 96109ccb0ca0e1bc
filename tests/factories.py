"""Test data made on the fly: photo-like images, near-duplicates, a loopback image server."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image, ImageDraw


def photo(seed: int, size: int = 256, fmt: str = "JPEG") -> bytes:
    """A photo-like image: a lit gradient background and a few coloured shapes, distinct per seed."""
    rng = np.random.default_rng(seed)
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    background = (top * (1 - ramp) + bottom * ramp).astype(np.uint8)
    img = Image.fromarray(np.repeat(background, size, axis=1))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = rng.integers(0, size * 3 // 4, 2)
        w, h = rng.integers(size // 8, size // 2, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = rng.integers(0, 3)
        box = (int(x0), int(y0), int(x0 + w), int(y0 + h))
        if shape == 0:
            draw.ellipse(box, fill=colour)
        elif shape == 1:
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])], fill=colour)
    return encode(img, fmt)


def encode(img: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        options.setdefault("quality", 90)
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


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
