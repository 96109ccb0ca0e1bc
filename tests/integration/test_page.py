"""The web page at / : served with a strict Content-Security-Policy, works offline, /docs unchanged."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

from fastapi.testclient import TestClient

from tests.live import live_server


def test_page_and_static_files_carry_a_strict_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for path in ("/", "/static/app.js", "/static/style.css", "/static/placeholder.svg"):
        response = client.get(path)
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy
        assert "script-src 'self';" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert re.search(r"img-src 'self' data: blob:", policy)
        assert response.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    # no inline script, nothing fetched from another origin at run time
    html = page.text
    assert re.findall(r"<script[^>]*>", html) == ['<script type="module" src="/static/app.js">']
    assert "http://" not in html and "https://" not in html.replace("https://… photo URL", "")
    for name in ("app.js", "dom.js", "gallery.js", "style.css"):
        body = client.get(f"/static/{name}").text
        assert "http://" not in body and "https://" not in body
        assert "innerHTML" not in body
    assert client.get("/static/nothing.js").json()["error"]["code"] == "not_found"
    assert client.get("/docs").status_code == 200
    assert "content-security-policy" not in client.get("/docs").headers


def test_info_tells_random_weights(client: TestClient) -> None:
    info = client.get("/info").json()
    assert info["model_version"].startswith("siglip-tiny-random-")
    assert info["random_weights"] is True


def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """GET `target` exactly as written: httpx (and browsers) would remove the `..` segments before sending."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_static_files_never_reach_outside_their_folder(tmp_path: Path, tiny_model_path: Path) -> None:
    env = {"LOOKALIKE_MODEL_PATH": str(tiny_model_path), "LOOKALIKE_QDRANT_PATH": str(tmp_path / "q")}
    secret = Path(__file__).resolve().parents[2] / "app" / "demo" / "__init__.py"
    with live_server(env) as server:
        assert raw_get(server.port, "/static/app.js")[0] == 200  # the socket path serves what exists
        for target in (
            "/static/../../demo/__init__.py",  # app/http/static/../../demo/__init__.py = app/demo/__init__.py
            "/static/..%2f..%2fdemo%2f__init__.py",
            "/static/%2e%2e/%2e%2e/demo/__init__.py",
            "/static/..%5c..%5cdemo%5c__init__.py",
            "/static/../../../pyproject.toml",
            "/static/..",
        ):
            status, body = raw_get(server.port, target)
            assert status == 404, target
            assert json.loads(body)["error"]["code"] == "not_found", target
            assert secret.read_bytes()[:200] not in body and b"[project]" not in body
