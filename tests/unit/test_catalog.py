"""models.catalog: deterministic per seed, service-ready items.jsonl, split by product, logs inside splits."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from app.cli.index import item_from_line
from app.core.schemas import ItemIn
from models import catalog

N_ITEMS = 16


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        path = tmp_path_factory.mktemp(f"catalog-{name}")
        catalog.main(["--out", str(path), "--items", str(N_ITEMS), "--seed", str(seed), "--no-progress"])
        out[name] = path
    return out


def test_same_seed_gives_identical_bytes(catalogs: dict[str, Path]) -> None:
    a, b = _files(catalogs["a"]), _files(catalogs["b"])
    assert a.keys() == b.keys()
    assert len([k for k in a if k.endswith(".jpg")]) >= 3 * N_ITEMS  # several photos per product
    differing = [k for k in a if a[k] != b[k]]
    assert differing == []


def test_another_seed_gives_another_catalog(catalogs: dict[str, Path]) -> None:
    a, c = _files(catalogs["a"]), _files(catalogs["c"])
    assert a["items.jsonl"] != c["items.jsonl"]
    assert a["interactions.jsonl"] != c["interactions.jsonl"]
    assert a["images/it00000_0.jpg"] != c["images/it00000_0.jpg"]


def test_items_jsonl_is_what_the_index_command_takes(catalogs: dict[str, Path]) -> None:
    root = catalogs["a"]
    items = _jsonl(root / "items.jsonl")
    assert len(items) == N_ITEMS
    for it in items:
        assert set(it) == {"item_id", "image", "title", "category", "price", "seller_id", "attributes"}
        assert it["category"] in {c.name for c in catalog.CATEGORIES}
        assert isinstance(it["price"], int) and it["price"] >= 0
        # The title is built from the attributes ("navy striped tote bag").
        assert it["title"].startswith(it["attributes"]["colour"])
        assert it["title"].endswith(it["attributes"]["style"])
        assert all(isinstance(v, str) for v in it["attributes"].values())
        with Image.open(root / it["image"]) as img:
            assert img.format == "JPEG" and img.mode == "RGB"


def test_every_line_passes_the_index_commands_parser_and_schema(catalogs: dict[str, Path]) -> None:
    # `lookalike index items.jsonl` reads relative image paths from the file's folder and posts ItemIn bodies.
    root = catalogs["a"]
    for line in (root / "items.jsonl").read_text().splitlines():
        body = item_from_line(line, root)
        ItemIn.model_validate(body)
        assert body["image_base64"]


def test_split_is_by_product_and_logs_stay_inside_their_split(catalogs: dict[str, Path]) -> None:
    root = catalogs["a"]
    split = json.loads((root / "split.json").read_text())
    train, test = set(split["train"]), set(split["test"])
    items = {it["item_id"] for it in _jsonl(root / "items.jsonl")}
    assert train | test == items and not train & test and test
    for photo in _jsonl(root / "photos.jsonl"):  # every photo of a product belongs to that product's side
        assert photo["item_id"] in items and (root / photo["path"]).is_file()
    sessions = _jsonl(root / "interactions.jsonl")
    assert sum(len(s["tapped"]) for s in sessions) > 0
    for s in sessions:
        side = train if s["viewed"] in train else test
        assert set(s["shown"]) <= side and set(s["tapped"]) <= set(s["shown"])
        assert s["viewed"] not in s["shown"]


def test_taps_follow_attribute_similarity() -> None:
    # The logs are driven by attributes: a same-category, same-colour listing is far likelier tapped.
    a = catalog.make_products(1, seed=3)[0]
    twin = replace(a, item_id="twin", seller_id="s9999")
    other_cat = (a.category + 1) % len(catalog.CATEGORIES)
    far = replace(a, item_id="far", category=other_cat, colour="white", rgb=catalog.COLOURS["white"])
    if a.colour == "white":
        far = replace(far, colour="black", rgb=catalog.COLOURS["black"])
    near_colour_other_cat = replace(a, item_id="near", category=other_cat)
    assert catalog.affinity(a, twin) > catalog.affinity(a, near_colour_other_cat) > catalog.affinity(a, far)


def test_stand_in_is_documented() -> None:
    doc = catalog.__doc__ or ""
    assert "STAND-IN" in doc and "never" in doc


LISTINGS = 40


@pytest.fixture(scope="module")
def listing_catalogs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = []
    for _ in range(2):
        path = tmp_path_factory.mktemp("listings")
        args = ["--out", str(path), "--items", str(LISTINGS), "--seed", "5", "--image-size", "64", "--no-progress"]
        catalog.main([*args, "--photos", "1-4", "--listings-per-product", "2-3", "--size-chart-sellers", "2"])
        out.append(path)
    return out


def test_listing_catalog_is_deterministic(listing_catalogs: list[Path]) -> None:
    a, b = (_files(p) for p in listing_catalogs)
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []
    assert "listings.jsonl" in a


def test_listings_carry_every_photo_cover_first(listing_catalogs: list[Path]) -> None:
    root = listing_catalogs[0]
    items, truth = _jsonl(root / "items.jsonl"), _jsonl(root / "listings.jsonl")
    assert len(items) == LISTINGS and [t["item_id"] for t in truth] == [it["item_id"] for it in items]
    product_photos = {(r["item_id"], r["path"]) for r in _jsonl(root / "photos.jsonl")}
    for it, t in zip(items, truth, strict=True):
        assert it["image"] == it["images"][0] and len(it["images"]) == len(t["views"])
        assert it["seller_id"] == t["seller_id"]
        product_views = [v for v in t["views"] if v != "size_chart"]
        assert 1 <= len(product_views) <= 4 and set(product_views) <= {"front", "angle", "detail", "dim"}
        for path, view in zip(it["images"], t["views"], strict=True):
            assert (root / path).is_file()
            assert ((it["item_id"], path) in product_photos) == (view != "size_chart")  # charts are no training pair


def test_products_are_listed_several_times_and_split_whole(listing_catalogs: list[Path]) -> None:
    root = listing_catalogs[0]
    truth = _jsonl(root / "listings.jsonl")
    split = json.loads((root / "split.json").read_text())
    side = {i: "test" for i in split["test"]} | {i: "train" for i in split["train"]}
    by_product: dict[str, list[dict]] = {}
    for t in truth:
        by_product.setdefault(t["product_id"], []).append(t)
    assert max(len(v) for v in by_product.values()) >= 2
    titles = {it["item_id"]: it["title"] for it in _jsonl(root / "items.jsonl")}
    for rows in by_product.values():
        assert len({side[r["item_id"]] for r in rows}) == 1
        assert len({titles[r["item_id"]] for r in rows}) == 1


def test_size_chart_sellers_put_one_chart_on_every_listing(listing_catalogs: list[Path]) -> None:
    root = listing_catalogs[0]
    charts: dict[str, list[bytes]] = {}
    for t, it in zip(_jsonl(root / "listings.jsonl"), _jsonl(root / "items.jsonl"), strict=True):
        has_chart = t["views"][-1] == "size_chart"
        assert has_chart == (t["seller_id"] in {"s0000", "s0001"}) and t["views"].count("size_chart") == int(has_chart)
        if has_chart:
            charts.setdefault(t["seller_id"], []).append((root / it["images"][-1]).read_bytes())
    assert set(charts) == {"s0000", "s0001"}
    for copies in charts.values():
        assert len(copies) >= 3
        # Mostly the very same bytes; the rest are re-encoded or resized copies of the same picture.
        most = max(copies.count(c) for c in copies)
        assert most >= 2
        with Image.open(io.BytesIO(copies[0])) as first:
            assert first.format == "JPEG"


def test_photos_flag_rejects_bad_ranges(tmp_path: Path) -> None:
    for bad in ("0-3", "4-2", "x"):
        with pytest.raises(SystemExit):
            catalog.main(["--out", str(tmp_path), "--photos", bad])
    with pytest.raises(SystemExit):
        catalog.main(["--out", str(tmp_path), "--size-chart-sellers", "2"])  # needs --photos
