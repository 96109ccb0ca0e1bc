"""The generated catalog's products (category, colour, pattern, price, seller), its train/test split and its
viewing sessions, whose taps follow attribute affinity (no pixel is read). Generated stand-in data."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# name, RGB. Shades are jittered per product, so "navy" covers a small neighbourhood.
COLOURS: dict[str, tuple[int, int, int]] = {
    "navy": (30, 42, 96),
    "red": (196, 32, 42),
    "green": (34, 122, 62),
    "mustard": (214, 168, 42),
    "black": (28, 28, 30),
    "white": (238, 238, 232),
    "pink": (238, 150, 182),
    "grey": (128, 130, 132),
    "brown": (116, 74, 42),
    "sky-blue": (118, 178, 228),
    "orange": (238, 118, 32),
    "purple": (108, 52, 140),
}
PATTERNS: tuple[str, ...] = ("plain", "striped", "polka-dot", "checked", "chevron")


@dataclass(frozen=True)
class Category:
    name: str  # the listing's category field
    nouns: tuple[str, str]  # title noun for variant 0 / variant 1
    base_price: float


CATEGORIES: tuple[Category, ...] = (
    Category("bags", ("tote bag", "mini tote bag"), 3500),
    Category("tops", ("t-shirt", "long-sleeve t-shirt"), 1800),
    Category("shoes", ("sneakers", "high-top sneakers"), 5200),
    Category("mugs", ("mug", "travel mug"), 1200),
    Category("bottles", ("water bottle", "flask"), 1500),
    Category("hats", ("cap", "bucket hat"), 2200),
    Category("dresses", ("mini dress", "maxi dress"), 4800),
    Category("lamps", ("desk lamp", "floor lamp"), 6400),
)


@dataclass(frozen=True)
class Product:
    item_id: str
    category: int
    variant: int
    colour: str
    rgb: tuple[int, int, int]
    pattern: str
    rgb2: tuple[int, int, int]
    price: int
    seller_id: str
    popularity: float

    @property
    def title(self) -> str:
        cat = CATEGORIES[self.category]
        words = [self.colour] if self.pattern == "plain" else [self.colour, self.pattern]
        return " ".join([*words, cat.nouns[self.variant]])


def jitter_rgb(rgb: tuple[int, int, int], rng: np.random.Generator, amount: float) -> tuple[int, int, int]:
    arr = np.array(rgb, dtype=np.float32) + rng.normal(0, amount, 3)
    return tuple(int(v) for v in np.clip(arr, 0, 255))  # type: ignore[return-value]


def _lab(rgb: tuple[int, int, int]) -> np.ndarray:
    # Colour distance for tap similarity is computed in CIE Lab, which tracks what people call "close".
    c = np.array(rgb, dtype=np.float64) / 255
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = m @ c / np.array([0.9505, 1.0, 1.089])
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _second_colour(rgb: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, int, int]:
    light = sum(rgb) / 3 > 140
    options = [(30, 30, 34), (30, 42, 96), (120, 30, 40)] if light else [(240, 240, 236), (236, 210, 120)]
    return options[int(rng.integers(0, len(options)))]


def seller_weights(n_listings: int) -> np.ndarray:
    """Probability of each seller s0000, s0001, ... for `n_listings` listings: a few shops list a lot (Zipf-like)."""
    n_sellers = max(3, n_listings // 6)
    weights = 1.0 / np.arange(1, n_sellers + 1) ** 0.8
    return weights / weights.sum()


def make_products(n: int, seed: int) -> list[Product]:
    root = np.random.SeedSequence([seed, 1])
    weights = seller_weights(n)
    colour_names = list(COLOURS)
    products = []
    for i, child in enumerate(root.spawn(n)):
        rng = np.random.default_rng(child)
        cat = int(rng.integers(0, len(CATEGORIES)))
        colour = colour_names[int(rng.integers(0, len(colour_names)))]
        rgb = jitter_rgb(COLOURS[colour], rng, 10)
        pattern = PATTERNS[int(rng.choice(len(PATTERNS), p=[0.4, 0.15, 0.15, 0.15, 0.15]))]
        price = CATEGORIES[cat].base_price * math.exp(rng.normal(0, 0.45))
        products.append(
            Product(
                item_id=f"it{i:05d}",
                category=cat,
                variant=int(rng.integers(0, 2)),
                colour=colour,
                rgb=rgb,
                pattern=pattern,
                rgb2=_second_colour(rgb, rng),
                price=int(round(price, -1)),
                seller_id=f"s{int(rng.choice(len(weights), p=weights)):04d}",
                popularity=float(rng.normal(0, 0.5)),
            )
        )
    return products


def split_products(products: list[Product], test_frac: float, seed: int) -> tuple[list[str], list[str]]:
    """Held-out products: stratified by category so every category has test queries."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    test: list[str] = []
    for cat in range(len(CATEGORIES)):
        ids = [p.item_id for p in products if p.category == cat]
        rng.shuffle(ids)
        test.extend(ids[: round(len(ids) * test_frac)])
    test_set = set(test)
    return [p.item_id for p in products if p.item_id not in test_set], sorted(test)


def affinity(a: Product, b: Product) -> float:
    """How much a user viewing `a` wants `b`: attribute similarity (no pixels involved)."""
    colour = math.exp(-float(np.linalg.norm(_lab(a.rgb) - _lab(b.rgb))) / 25)
    price = math.exp(-abs(math.log(a.price / b.price)))
    # Look-alike browsing: colour is the most salient cue, then the kind of thing and its pattern.
    return (
        2.0 * colour
        + 1.2 * (a.category == b.category)
        + 1.0 * (a.pattern == b.pattern)
        + 0.3 * (a.category == b.category and a.variant == b.variant)
        + 0.3 * price
    )


def make_sessions(
    products: list[Product], pool_ids: Iterable[str], seed: int, tag: int, sessions_per_item: int, shown: int
) -> list[dict]:
    """View -> shown -> tapped sessions among `pool_ids` (one split, so held-out logs stay held out)."""
    by_id = {p.item_id: p for p in products}
    pool = [by_id[i] for i in pool_ids]
    out = []
    root = np.random.SeedSequence([seed, 3, tag])
    for q, child in zip(pool, root.spawn(len(pool)), strict=True):
        rng = np.random.default_rng(child)
        others = [p for p in pool if p.item_id != q.item_id]
        for s in range(sessions_per_item):
            # Exposure is uniform over the split, so taps measure attribute affinity alone (an existing
            # recommender's exposure bias would make "what was shown" part of the ground truth).
            picks = rng.choice(len(others), min(shown, len(others)), replace=False)
            shown_ids = [others[int(k)].item_id for k in picks]
            tapped = []
            for cid in shown_ids:
                c = by_id[cid]
                logit = 2.2 * (affinity(q, c) - 2.6) + c.popularity + rng.normal(0, 0.8)
                if rng.random() < 1 / (1 + math.exp(-logit)):
                    tapped.append(cid)
            out.append({"session_id": f"{q.item_id}-{s}", "viewed": q.item_id, "shown": shown_ids, "tapped": tapped})
    return out
