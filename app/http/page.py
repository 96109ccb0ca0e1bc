"""The web page (GET /) and its static files: browse the items, their look-alikes, search by photo.

Plain files under app/http/static/ (no build step, nothing fetched from elsewhere at run time). The
page only reads the public API, so it needs no key. Every answer here carries a strict
Content-Security-Policy: scripts and styles only from this origin, no inline script.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response

from app.core.errors import NotFound

STATIC_DIR = Path(__file__).with_name("static")
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
# Read once: a fixed set of names, so no request path ever reaches the file system.
FILES = {p.name: (p.read_bytes(), MEDIA_TYPES[p.suffix]) for p in STATIC_DIR.iterdir() if p.suffix in MEDIA_TYPES}

router = APIRouter(include_in_schema=False)


def content_security_policy() -> str:
    # Photos come from GET /items/{id}/image, a redirect to the http(s) URL an item was written from,
    # and a redirected image must pass img-src too: so images (passive content) may come from any
    # http(s) host. Scripts, styles and connections stay on this origin.
    return (
        "default-src 'self'; "
        "img-src 'self' data: blob: http: https:; "
        "script-src 'self'; style-src 'self'; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def _answer(name: str) -> Response:
    body, media_type = FILES[name]
    headers = {
        "Content-Security-Policy": content_security_policy(),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    return Response(body, media_type=media_type, headers=headers)


@router.get("/")
async def page() -> Response:
    return _answer("index.html")


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    if name not in FILES:
        raise NotFound(f"no static file {name!r}")
    return _answer(name)
