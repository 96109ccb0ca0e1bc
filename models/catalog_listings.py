"""Multi-photo listings of the generated catalog (`python -m models.catalog --photos MIN-MAX`). Generated stand-in data.

A product is listed by one or more sellers (--listings-per-product), so "the same product" has several listings
to find. Each listing has its own photos: the product drawn in views (front, other angle, close-up, dim light),
each with its own background, framing and lighting; the cover is usually a front shot but, as on real
marketplaces, not always. The largest --size-chart-sellers shops (s0000, s0001, ...) append their size chart,
the same picture on every one of their listings: mostly the same bytes, sometimes re-encoded or slightly
resized, as a photo goes through different upload paths. It is no photo of the product, so it is left out of
photos.jsonl (the fine-tune's photo/title pairs) and named in listings.jsonl (the ground truth).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from models.catalog_products import CATEGORIES, Product, make_products, seller_weights
from models.catalog_render import VIEWS, jpeg_bytes, render_photo

SIZE_CHART = "size_chart"
VIEW_NAMES = tuple(VIEWS)
# Cover view weights (front, angle, detail, dim): most sellers lead with a clean front shot, some do not.
COVER_WEIGHTS = (0.6, 0.15, 0.15, 0.1)


@dataclass(frozen=True)
class Listing:
    item: Product  # the product as this listing shows it: its own item_id and seller_id
    product_id: str


def make_listings(n_listings: int, seed: int, per_product: tuple[int, int]) -> list[Listing]:
    """`n_listings` listings of as many products as it takes, each listed `per_product` times by any seller."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    counts = rng.integers(per_product[0], per_product[1] + 1, n_listings)
    n_products = int(np.searchsorted(np.cumsum(counts), n_listings)) + 1
    weights = seller_weights(n_listings)
    listings = []
    for p, count in zip(make_products(n_products, seed), counts, strict=False):
        product_id = "p" + p.item_id.removeprefix("it")
        for _ in range(int(count)):
            if len(listings) == n_listings:
                break
            seller = f"s{int(rng.choice(len(weights), p=weights)):04d}"
            listings.append(Listing(replace(p, item_id=f"it{len(listings):05d}", seller_id=seller), product_id))
    return listings


def split_listings(listings: list[Listing], test_products: set[str]) -> tuple[list[str], list[str]]:
    """(train, test) listing ids: all listings of a product land on its product's side."""
    test = [lst.item.item_id for lst in listings if lst.product_id in test_products]
    train = [lst.item.item_id for lst in listings if lst.product_id not in test_products]
    return train, test


def size_chart(seller_rank: int, seed: int, size: int) -> Image.Image:
    """A shop's size chart: a header in the shop's colour, a table of text-like bars, a measured outline."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 6, seller_rank]))
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(236, 256, 3)))
    draw = ImageDraw.Draw(img)
    head = int(size * 0.16)
    draw.rectangle([0, 0, size, head], fill=tuple(int(v) for v in rng.integers(20, 200, 3)))
    for k in range(int(rng.integers(2, 5))):  # the shop's name and "SIZE GUIDE" as light bars
        x = int(size * (0.08 + 0.2 * k))
        draw.rectangle([x, head // 3, x + int(size * rng.uniform(0.08, 0.17)), head // 3 + 4], fill=(250, 250, 250))
    rows, cols = int(rng.integers(4, 8)), int(rng.integers(3, 6))
    left, top, right, bottom = int(size * 0.04), int(size * 0.22), int(size * 0.62), int(size * 0.95)
    for r in range(rows + 1):
        y = top + (bottom - top) * r // rows
        draw.line([left, y, right, y], fill=(90, 90, 90), width=1)
    for c in range(cols + 1):
        x = left + (right - left) * c // cols
        draw.line([x, top, x, bottom], fill=(90, 90, 90), width=1)
    cell_w, cell_h = (right - left) / cols, (bottom - top) / rows
    for r in range(rows):
        for c in range(cols):
            x, y = left + c * cell_w + 3, top + r * cell_h + cell_h / 2 - 2
            draw.rectangle([x, y, x + cell_w * rng.uniform(0.3, 0.75), y + 3], fill=(30, 30, 30))
    # A garment outline with measuring arrows, as size charts show where to measure.
    draw.rectangle([int(size * 0.68), int(size * 0.3), int(size * 0.94), int(size * 0.85)], outline=(40, 40, 40))
    draw.line([int(size * 0.66), int(size * 0.92), int(size * 0.96), int(size * 0.92)], fill=(200, 40, 40), width=2)
    return img


def chart_copy(base: bytes, rng: np.random.Generator) -> bytes:
    """The chart as one listing carries it: the same bytes, or re-encoded, or slightly resized and re-encoded."""
    roll = rng.random()
    if roll < 0.5:
        return base
    with Image.open(io.BytesIO(base)) as img:
        img = img.convert("RGB")
        if roll >= 0.75:
            side = int(img.width * rng.uniform(0.85, 0.97))
            img = img.resize((side, side), Image.Resampling.LANCZOS)
        return jpeg_bytes(img, quality=int(rng.integers(60, 91)))


def write_listing_photos(
    out: Path,
    listings: list[Listing],
    seed: int,
    size: int,
    photos: tuple[int, int],
    chart_sellers: int,
    progress: bool,
) -> tuple[list[dict], list[dict], list[dict]]:
    """Every listing's photos under out/images; returns (items.jsonl, photos.jsonl, listings.jsonl rows)."""
    charts = {f"s{k:04d}": jpeg_bytes(size_chart(k, seed, size), quality=90) for k in range(chart_sellers)}
    items, photo_rows, truth = [], [], []
    children = np.random.SeedSequence([seed, 5]).spawn(len(listings))
    for lst, child in tqdm(
        list(zip(listings, children, strict=True)), desc="catalog", unit="listing", disable=not progress
    ):
        rng = np.random.default_rng(child)
        p = lst.item
        n = int(rng.integers(photos[0], photos[1] + 1))
        views = [VIEW_NAMES[int(rng.choice(len(VIEW_NAMES), p=COVER_WEIGHTS))]]
        views += [VIEW_NAMES[int(rng.integers(0, len(VIEW_NAMES)))] for _ in range(n - 1)]
        paths = []
        for k, view in enumerate(views):
            rel = f"images/{p.item_id}_{k}.jpg"
            data = jpeg_bytes(render_photo(p, rng, size, VIEWS[view]), quality=int(rng.integers(55, 93)))
            (out / rel).write_bytes(data)
            photo_rows.append({"item_id": p.item_id, "photo": k, "path": rel})
            paths.append(rel)
        if p.seller_id in charts:
            rel = f"images/{p.item_id}_{len(views)}.jpg"
            (out / rel).write_bytes(chart_copy(charts[p.seller_id], rng))
            paths.append(rel)
            views.append(SIZE_CHART)
        items.append(_item_row(p, paths))
        truth.append({"item_id": p.item_id, "product_id": lst.product_id, "seller_id": p.seller_id, "views": views})
    return items, photo_rows, truth


def _item_row(p: Product, paths: list[str]) -> dict:
    cat = CATEGORIES[p.category]
    return {
        "item_id": p.item_id,
        "image": paths[0],
        "images": paths,
        "title": p.title,
        "category": cat.name,
        "price": p.price,
        "seller_id": p.seller_id,
        "attributes": {"colour": p.colour, "pattern": p.pattern, "style": cat.nouns[p.variant]},
    }
