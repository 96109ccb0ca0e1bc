"""A real Chromium (Selenium 4, headless) against a live `python -m app` holding a generated catalog.

Needs Debian's chromium and chromium-driver (`apt-get install -y chromium chromium-driver`); without
them these tests fail with that message (they are never skipped). Screenshots go to $ARTIFACTS_DIR
(default: test-artifacts/).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.demo import photo_server
from tests.live import live_server

CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
INSTALL_HINT = "install them with: apt-get update && apt-get install -y chromium chromium-driver"
XSS_TITLE = "<img src=x onerror=alert(1)>"
CATALOG_ITEMS = 24


@dataclass
class Site:
    url: str
    items: list[dict[str, Any]]  # as indexed (image = the photo's URL)
    catalog: Path
    artifacts: Path


def artifacts_dir() -> Path:
    path = Path(os.environ.get("ARTIFACTS_DIR") or Path(__file__).resolve().parents[2] / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


CANDIDATE_VERSION = "v2-candidate"


@pytest.fixture(scope="session")
def site(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The tiny model serving and a second tiny model (another seed) as a candidate: writes carry both
    versions' vectors, so the page's side-by-side comparison has two real lists to show."""
    from models.catalog import generate
    from models.export import export_model

    candidate = export_model(
        tmp_path_factory.mktemp("candidate") / "v2.onnx", config="tiny", seed=1, model_version=CANDIDATE_VERSION
    ).path

    catalog = tmp_path_factory.mktemp("catalog")
    generate(catalog, CATALOG_ITEMS, seed=3, progress=False)
    rows = [json.loads(line) for line in (catalog / "items.jsonl").read_text().splitlines() if line.strip()]
    env = {
        "LOOKALIKE_MODEL_PATH": f"{tiny_model_path},{candidate}",
        "LOOKALIKE_QDRANT_PATH": str(tmp_path_factory.mktemp("browser-store")),
        "LOOKALIKE_FETCH_ALLOW_PRIVATE": "true",  # the photo server is on loopback
    }
    with photo_server(catalog) as photos, live_server(env) as server:
        items = [{**{k: v for k, v in r.items() if k != "image"}, "image_url": f"{photos}/{r['image']}"} for r in rows]
        items.append({**items[0], "item_id": "xss", "title": XSS_TITLE, "seller_id": "evil"})
        answer = httpx.post(server.url + "/items/batch", json={"items": items}, timeout=120)
        assert [r["status"] for r in answer.json()["results"]] == [201] * len(items), answer.text
        yield Site(server.url, items, catalog, artifacts_dir())


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.fail(f"the browser tests need Chromium and its driver; {', '.join(missing)} not found: {INSTALL_HINT}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: Any, site: Site) -> Iterator[Any]:
    """The browser, with the console checked after each test: no error, no uncaught exception."""
    browser.set_window_size(1280, 900)
    browser.get_log("browser")  # start clean
    yield browser
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], f"browser console errors: {errors}"
