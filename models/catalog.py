"""Generated, product-like demo catalog: listing photos, titles, prices, sellers and interaction logs.

THIS IS A STAND-IN. Every image, title, price, seller and tap in it comes from a seeded random
generator written for this project. It exists so that the fine-tune -> export -> evaluate loop can be
run and tested end to end without any real marketplace data. Numbers measured on it say that the
pipeline works (a model that learns the attributes behind the taps ranks better); they are never
evidence about real marketplaces, real users or real product photos.

    python -m models.catalog --out data/catalog --items 400 --seed 7
    python -m models.catalog --out data/listings --items 600 --seed 7 --photos 1-6 --size-chart-sellers 4

What it writes under --out (all paths inside the files are relative to --out):

    items.jsonl         one listing per line, the shape `lookalike index FILE.jsonl` takes:
                        item_id, image, title, category, price, seller_id, attributes
    photos.jsonl        every photo of every listing (item_id, photo, path): the main photo is the
                        listing's `image`; the others are extra views used as training pairs
    interactions.jsonl  one viewing session per line: viewed item, items shown, items tapped
    split.json          train / test item ids (the split is by product: all photos of a product land
                        on the same side)
    manifest.json       generator version, seed, counts, categories, colours, patterns
    images/*.jpg        the photos

Multi-photo listings (--photos MIN-MAX; models/catalog_listings.py): --items listings of as many products as
it takes, each product listed --listings-per-product times (default 2-3) by any seller, each listing with
MIN-MAX photos of its own in views (front, other angle, close-up, dim light); the --size-chart-sellers largest
shops append their size chart to every listing. items.jsonl then also has `images` (every photo, the cover
first; `image` stays the cover), photos.jsonl holds the product photos only (the size chart is no photo of the
titled product), and listings.jsonl is the ground truth the offline evaluation reads: item_id, product_id,
seller_id, views (one per photo, "size_chart" for the chart).

How the data is generated:

* A product has a category (distinct silhouette), a variant of that silhouette, a main colour (named
  palette with per-product shade jitter), a pattern (plain, striped, polka dot, checked, chevron)
  with a second colour, a price and a seller. Its title is built from the attributes, e.g.
  "navy striped tote bag" or "red high-top sneakers".
* Each photo draws the product over an unrelated random background (flat, gradient, floor line or
  noisy fabric), with scale, rotation, position/crop, shadow, lighting/white-balance jitter, optional
  blur, sensor noise and a small distractor object, then saves it as a JPEG of random quality.
* Sessions: a user views an item and is shown a random list of items from the same split. Each shown
  item is tapped with a probability that grows with attribute similarity to the viewed item (category,
  colour distance, pattern, variant, price closeness) plus per-tap noise and per-item popularity. Taps
  are what the offline evaluation calls relevant; no photo pixel is read to make them.

Everything is a pure function of --seed (each product and each photo draws from its own
`SeedSequence` child), so the same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.catalog_listings import make_listings, split_listings, write_listing_photos
from models.catalog_products import (
    CATEGORIES,
    COLOURS,
    PATTERNS,
    Category,
    Product,
    affinity,
    make_products,
    make_sessions,
    split_products,
)
from models.catalog_render import jpeg_bytes, render_photo

__all__ = [
    "CATEGORIES",
    "COLOURS",
    "GENERATOR_VERSION",
    "PATTERNS",
    "Category",
    "Listings",
    "Product",
    "affinity",
    "generate",
    "jpeg_bytes",
    "main",
    "make_products",
    "make_sessions",
    "render_photo",
    "split_products",
]

GENERATOR_VERSION = "catalog-v1"


@dataclass(frozen=True)
class Listings:
    """The multi-photo mode: photos per listing, listings per product, shops with a size chart on every listing."""

    photos: tuple[int, int]
    per_product: tuple[int, int] = (2, 3)
    size_chart_sellers: int = 0


def generate(
    out: Path,
    n_items: int,
    seed: int,
    *,
    size: int = 160,
    photos: tuple[int, int] = (3, 6),
    test_frac: float = 0.25,
    sessions_per_item: int = 4,
    shown: int = 30,
    progress: bool = True,
    listings: Listings | None = None,
) -> dict:
    """Write the catalog under `out`; returns the manifest. `listings`: multi-photo listings, several per product."""
    if n_items < 8:
        raise ValueError("--items must be at least 8 (one test product per category needs a few)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    extra: dict = {}
    if listings is None:
        products = make_products(n_items, seed)
        train_ids, test_ids = split_products(products, test_frac, seed)
        items, photo_rows = _write_photos(out, products, seed, size, photos, progress)
    else:
        products, train_ids, test_ids, items, photo_rows, extra = _listing_catalog(
            out, n_items, seed, size, test_frac, listings, progress
        )
    sessions = make_sessions(products, train_ids, seed, 0, sessions_per_item, shown) + make_sessions(
        products, test_ids, seed, 1, sessions_per_item, shown
    )
    _write_jsonl(out / "items.jsonl", items)
    _write_jsonl(out / "photos.jsonl", photo_rows)
    _write_jsonl(out / "interactions.jsonl", sessions)
    (out / "split.json").write_text(
        json.dumps({"by": "product", "train": train_ids, "test": test_ids}, indent=1) + "\n"
    )
    manifest = {
        "generator": GENERATOR_VERSION,
        "note": "generated stand-in data; not evidence about real marketplaces",
        "seed": seed,
        "items": n_items,
        "photos": len(photo_rows),
        "image_size": size,
        "train_items": len(train_ids),
        "test_items": len(test_ids),
        "sessions": len(sessions),
        "taps": sum(len(s["tapped"]) for s in sessions),
        "categories": [c.name for c in CATEGORIES],
        "colours": list(COLOURS),
        "patterns": list(PATTERNS),
        **extra,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _listing_catalog(
    out: Path, n_items: int, seed: int, size: int, test_frac: float, listings: Listings, progress: bool
) -> tuple[list[Product], list[str], list[str], list[dict], list[dict], dict]:
    """Multi-photo listings: (listings as products, train ids, test ids, items rows, photos rows, manifest extras)."""
    listed = make_listings(n_items, seed, listings.per_product)
    by_product = {lst.product_id: lst.item for lst in listed}  # a listing stands for its product's attributes
    _, test_products = split_products([replace(p, item_id=k) for k, p in by_product.items()], test_frac, seed)
    train_ids, test_ids = split_listings(listed, set(test_products))
    items, photo_rows, truth = write_listing_photos(
        out, listed, seed, size, listings.photos, listings.size_chart_sellers, progress
    )
    _write_jsonl(out / "listings.jsonl", truth)
    extra = {
        "products": len(by_product),
        "photos_per_listing": list(listings.photos),
        "listings_per_product": list(listings.per_product),
        "size_chart_sellers": [f"s{k:04d}" for k in range(listings.size_chart_sellers)],
    }
    return [lst.item for lst in listed], train_ids, test_ids, items, photo_rows, extra


def _write_photos(
    out: Path, products: list[Product], seed: int, size: int, photos: tuple[int, int], progress: bool
) -> tuple[list[dict], list[dict]]:
    """Every product's photos under out/images; returns (items.jsonl rows, photos.jsonl rows)."""
    photo_root = np.random.SeedSequence([seed, 4])
    items, photo_rows = [], []
    for p, child in tqdm(
        list(zip(products, photo_root.spawn(len(products)), strict=True)),
        desc="catalog",
        unit="item",
        disable=not progress,
    ):
        rng = np.random.default_rng(child)
        n_photos = int(rng.integers(photos[0], photos[1] + 1))
        for k in range(n_photos):
            rel = f"images/{p.item_id}_{k}.jpg"
            data = jpeg_bytes(render_photo(p, rng, size), quality=int(rng.integers(55, 93)))
            (out / rel).write_bytes(data)
            photo_rows.append({"item_id": p.item_id, "photo": k, "path": rel})
        cat = CATEGORIES[p.category]
        items.append(
            {
                "item_id": p.item_id,
                "image": f"images/{p.item_id}_0.jpg",
                "title": p.title,
                "category": cat.name,
                "price": p.price,
                "seller_id": p.seller_id,
                "attributes": {"colour": p.colour, "pattern": p.pattern, "style": cat.nouns[p.variant]},
            }
        )
    return items, photo_rows


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _range(text: str) -> tuple[int, int]:
    """ "3-6" -> (3, 6); "4" -> (4, 4)."""
    lo, _, hi = text.partition("-")
    try:
        bounds = (int(lo), int(hi or lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N or MIN-MAX") from None
    if not 1 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: need 1 <= MIN <= MAX")
    return bounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.catalog",
        description="Write a generated stand-in product catalog (images, titles, interaction logs). "
        "Generated data: not evidence about real marketplaces.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--items", type=int, default=400, help="number of listings (one per product without --photos)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=160, help="photo side in pixels")
    parser.add_argument("--test-frac", type=float, default=0.25, help="share of products held out")
    parser.add_argument(
        "--photos", type=_range, help="MIN-MAX photos per listing: multi-photo listings, several per product"
    )
    parser.add_argument("--listings-per-product", type=_range, default=(2, 3), help="MIN-MAX (with --photos)")
    parser.add_argument(
        "--size-chart-sellers", type=int, default=0, help="the N largest shops add their size chart (with --photos)"
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not 0 < args.test_frac < 1:
        parser.error("--test-frac must be between 0 and 1")
    if args.size_chart_sellers < 0 or (args.size_chart_sellers and args.photos is None):
        parser.error("--size-chart-sellers takes N >= 0 and needs --photos")
    listings = (
        None if args.photos is None else Listings(args.photos, args.listings_per_product, args.size_chart_sellers)
    )
    manifest = generate(
        args.out,
        args.items,
        args.seed,
        size=args.image_size,
        test_frac=args.test_frac,
        progress=not args.no_progress,
        listings=listings,
    )
    print(json.dumps({k: manifest[k] for k in ("items", "photos", "train_items", "test_items", "sessions", "taps")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
