"""The web page at / : served with a strict Content-Security-Policy, works offline, /docs unchanged."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient


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
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/app.js" defer></script>'[:-9]]
    assert "http://" not in html and "https://" not in html.replace("https://… photo URL", "")
    for name in ("app.js", "style.css"):
        body = client.get(f"/static/{name}").text
        assert "http://" not in body and "https://" not in body
        assert "innerHTML" not in body
    assert client.get("/static/../app/cli.py").status_code == 404
    assert client.get("/static/nothing.js").json()["error"]["code"] == "not_found"
    assert client.get("/docs").status_code == 200
    assert "content-security-policy" not in client.get("/docs").headers


def test_info_tells_random_weights(client: TestClient) -> None:
    info = client.get("/info").json()
    assert info["model_version"].startswith("siglip-tiny-random-")
    assert info["random_weights"] is True
