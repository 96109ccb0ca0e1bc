"""A real Chromium (Selenium 4, headless) against a live `python -m app` holding a generated catalog.

Needs Debian's chromium and chromium-driver (`apt-get install -y chromium chromium-driver`); without
them these tests fail with that message (they are never skipped). Screenshots go to $ARTIFACTS_DIR
(default: test-artifacts/).
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
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
MULTI = "three-photos"  # photos: a (URL), b (base64), chart (base64; on two other listings too: boilerplate)
COPY = "holds-b"  # photos: d, e, b: its photo 2 is an exact copy of MULTI's photo 1
CHARTS = ("chart-1", "chart-2")  # photos: their own, then MULTI's chart


@dataclass
class Site:
    url: str
    items: list[dict[str, Any]]  # as indexed (image_url = the photo's URL; or images = the listing's photos)
    catalog: Path
    artifacts: Path


def artifacts_dir() -> Path:
    path = Path(os.environ.get("ARTIFACTS_DIR") or Path(__file__).resolve().parents[2] / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


CANDIDATE_VERSION = "v2-candidate"


def drawn_photo(seed: int) -> bytes:
    """A PNG of a few coloured shapes, different for each seed (any two differ for the model too)."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    image = Image.new("RGB", (96, 96), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randrange(80), rng.randrange(80)
        box = (x, y, x + rng.randrange(16, 60), y + rng.randrange(16, 60))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def several_photo_listings(catalog: Path, photos_url: str, like: dict[str, Any]) -> list[dict[str, Any]]:
    """MULTI, COPY and CHARTS, in the order they must be written (the chart becomes boilerplate with the last)."""
    (catalog / "images" / "multi_a.png").write_bytes(drawn_photo(101))
    b64 = {seed: base64.b64encode(drawn_photo(seed)).decode() for seed in (102, 103, 104, 105, 106, 107)}
    b, chart = {"base64": b64[102]}, {"base64": b64[103]}
    common = {k: like[k] for k in ("category", "seller_id")}
    return [
        {**common, "item_id": MULTI, "title": "Three photos", "price": 30.0,
         "images": [{"url": f"{photos_url}/images/multi_a.png"}, b, chart]},
        {**common, "item_id": COPY, "title": "Holds a copy", "price": 31.0,
         "images": [{"base64": b64[104]}, {"base64": b64[105]}, b]},
        {**common, "item_id": CHARTS[0], "title": "Size chart one", "price": 32.0,
         "images": [{"base64": b64[106]}, chart]},
        {**common, "item_id": CHARTS[1], "title": "Size chart two", "price": 33.0,
         "images": [{"base64": b64[107]}, chart]},
    ]  # fmt: skip


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
        "LOOKALIKE_BOILERPLATE_MIN_LISTINGS": "2",  # the chart on 3 listings is boilerplate
    }
    with photo_server(catalog) as photos, live_server(env) as server:
        items = [{**{k: v for k, v in r.items() if k != "image"}, "image_url": f"{photos}/{r['image']}"} for r in rows]
        items.append({**items[0], "item_id": "xss", "title": XSS_TITLE, "seller_id": "evil"})
        answer = httpx.post(server.url + "/items/batch", json={"items": items}, timeout=120)
        assert [r["status"] for r in answer.json()["results"]] == [201] * len(items), answer.text
        for listing in several_photo_listings(catalog, photos, rows[0]):  # one by one: the marks need the others
            written = httpx.post(server.url + "/items", json=listing, timeout=120)
            assert written.status_code == 201, written.text
            items.append(listing)
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
