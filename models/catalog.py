"""Generated, product-like demo catalog: listing photos, titles, prices, sellers and interaction logs.

THIS IS A STAND-IN. Every image, title, price, seller and tap in it comes from a seeded random
generator written for this project. It exists so that the fine-tune -> export -> evaluate loop can be
run and tested end to end without any real marketplace data. Numbers measured on it say that the
pipeline works (a model that learns the attributes behind the taps ranks better); they are never
evidence about real marketplaces, real users or real product photos.

    python -m models.catalog --out data/catalog --items 400 --seed 7

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
import io
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

GENERATOR_VERSION = "catalog-v1"

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


# ---------------------------------------------------------------------------------------------------
# Silhouettes: each draws a white-on-black mask in a unit box scaled to `s` pixels.

Poly = list[tuple[float, float]]


def _poly(draw: ImageDraw.ImageDraw, s: int, pts: Poly) -> None:
    draw.polygon([(x * s, y * s) for x, y in pts], fill=255)


def _ellipse(draw: ImageDraw.ImageDraw, s: int, box: tuple[float, float, float, float], width: float = 0) -> None:
    xy = [box[0] * s, box[1] * s, box[2] * s, box[3] * s]
    if width:
        draw.ellipse(xy, outline=255, width=max(1, int(width * s)))
    else:
        draw.ellipse(xy, fill=255)


def _rect(draw: ImageDraw.ImageDraw, s: int, box: tuple[float, float, float, float], r: float = 0) -> None:
    xy = [box[0] * s, box[1] * s, box[2] * s, box[3] * s]
    draw.rounded_rectangle(xy, radius=r * s, fill=255)


def _bag(draw: ImageDraw.ImageDraw, s: int, variant: int) -> None:
    if variant == 0:
        _poly(draw, s, [(0.18, 0.40), (0.82, 0.40), (0.90, 0.94), (0.10, 0.94)])
        draw.arc([0.30 * s, 0.06 * s, 0.70 * s, 0.74 * s], 180, 360, fill=255, width=int(0.05 * s))
    else:
        _poly(draw, s, [(0.28, 0.52), (0.72, 0.52), (0.78, 0.92), (0.22, 0.92)])
        draw.arc([0.38 * s, 0.34 * s, 0.62 * s, 0.70 * s], 180, 360, fill=255, width=int(0.05 * s))


def _top(draw: ImageDraw.ImageDraw, s: int, variant: int) -> None:
    body = [(0.30, 0.14), (0.42, 0.10), (0.50, 0.16), (0.58, 0.10), (0.70, 0.14)]
    if variant == 0:  # short sleeves
        _poly(
            draw,
            s,
            [
                *body,
                (0.92, 0.32),
                (0.82, 0.44),
                (0.72, 0.36),
                (0.72, 0.92),
                (0.28, 0.92),
                (0.28, 0.36),
                (0.18, 0.44),
                (0.08, 0.32),
            ],
        )
    else:  # long sleeves reaching down
        _poly(
            draw,
            s,
            [
                *body,
                (0.86, 0.40),
                (0.96, 0.86),
                (0.86, 0.88),
                (0.72, 0.46),
                (0.72, 0.92),
                (0.28, 0.92),
                (0.28, 0.46),
                (0.14, 0.88),
                (0.04, 0.86),
                (0.14, 0.40),
            ],
        )


def _shoe(draw: ImageDraw.ImageDraw, s: int, variant: int) -> None:
    top = 0.50 if variant == 0 else 0.18
    _poly(
        draw,
        s,
        [
            (0.08, 0.66),
            (0.12, top + 0.06),
            (0.36, top),
            (0.46, top + 0.10),
            (0.50, 0.52),
            (0.86, 0.60),
            (0.94, 0.70),
            (0.94, 0.80),
            (0.06, 0.80),
        ],
    )
    _rect(draw, s, (0.04, 0.78, 0.96, 0.88), 0.04)  # sole


def _mug(draw: ImageDraw.ImageDraw, s: int, variant: int) -> None:
    if variant == 0:
        _rect(draw, s, (0.16, 0.26, 0.70, 0.86), 0.06)
        _ellipse(draw, s, (0.56, 0.38, 0.90, 0.72), width=0.07)
    else:  # travel mug: tall, tapered, lid, no handle
        _poly(draw, s, [(0.32, 0.18), (0.68, 0.18), (0.64, 0.92), (0.36, 0.92)])
        _rect(draw, s, (0.28, 0.08, 0.72, 0.20), 0.04)


def _bottle(draw: ImageDraw.ImageDraw, s: int, variant: int) -> None:
    if variant == 0:
        _rect(draw, s, (0.30, 0.30, 0.70, 0.94), 0.12)
        _poly(draw, s, [(0.34, 0.32), (0.42, 0.16), (0.58, 0.16), (0.66, 0.32)])
        _rect(draw, s, (0.41, 0.06, 0.59, 0.17), 0.02)
    else:  # flask: round body, short neck
        _ellipse(draw, s, (0.16, 0.30, 0.84, 0.96))
        _rect(draw, s, (0.42, 0.10, 0.58, 0.36), 0.02)


def _hat(draw: ImageDraw.ImageDraw, s: int, variant: int) -> None:
    if variant == 0:  # cap: dome and a brim sticking out to one side
        draw.chord([0.16 * s, 0.24 * s, 0.76 * s, 0.88 * s], 180, 360, fill=255)
        _poly(draw, s, [(0.60, 0.52), (0.96, 0.58), (0.94, 0.64), (0.60, 0.60)])
    else:  # bucket hat: trapezoid crown, wide symmetric brim
        _poly(draw, s, [(0.30, 0.26), (0.70, 0.26), (0.78, 0.60), (0.22, 0.60)])
        _poly(draw, s, [(0.22, 0.56), (0.78, 0.56), (0.96, 0.74), (0.04, 0.74)])


def _dress(draw: ImageDraw.ImageDraw, s: int, variant: int) -> None:
    hem = 0.62 if variant == 0 else 0.96
    flare = 0.16 if variant == 0 else 0.08
    _poly(
        draw,
        s,
        [
            (0.38, 0.06),
            (0.42, 0.06),
            (0.46, 0.20),
            (0.54, 0.20),
            (0.58, 0.06),
            (0.62, 0.06),
            (0.64, 0.34),
            (0.60, 0.42),
            (0.80 + flare, hem),
            (0.20 - flare, hem),
            (0.40, 0.42),
            (0.36, 0.34),
        ],
    )


def _lamp(draw: ImageDraw.ImageDraw, s: int, variant: int) -> None:
    if variant == 0:  # desk lamp: wide base, angled arm, shade
        _rect(draw, s, (0.20, 0.84, 0.62, 0.92), 0.03)
        draw.line([(0.40 * s, 0.86 * s), (0.30 * s, 0.50 * s), (0.56 * s, 0.30 * s)], fill=255, width=int(0.05 * s))
        _poly(draw, s, [(0.50, 0.18), (0.70, 0.14), (0.90, 0.44), (0.58, 0.50)])
    else:  # floor lamp: tall pole, drum shade
        _poly(draw, s, [(0.34, 0.04), (0.66, 0.04), (0.74, 0.30), (0.26, 0.30)])
        _rect(draw, s, (0.47, 0.28, 0.53, 0.92))
        _ellipse(draw, s, (0.30, 0.88, 0.70, 0.98))


SILHOUETTES: tuple[Callable[[ImageDraw.ImageDraw, int, int], None], ...] = (
    _bag,
    _top,
    _shoe,
    _mug,
    _bottle,
    _hat,
    _dress,
    _lamp,
)


# ---------------------------------------------------------------------------------------------------
# Textures and backgrounds.


def _texture(
    s: int, pattern: str, rgb: tuple[int, int, int], rgb2: tuple[int, int, int], rng: np.random.Generator
) -> Image.Image:
    img = Image.new("RGB", (s, s), rgb)
    draw = ImageDraw.Draw(img)
    period = int(s * rng.uniform(0.09, 0.14))
    phase = int(rng.integers(0, period))
    if pattern == "striped":
        width = max(2, period // 2)
        horizontal = rng.random() < 0.5
        for k in range(-period, s + period, period):
            x = k + phase
            box = [0, x, s, x + width] if horizontal else [x, 0, x + width, s]
            draw.rectangle(box, fill=rgb2)
    elif pattern == "polka-dot":
        r = max(2, int(period * 0.28))
        for row, y in enumerate(range(phase, s + period, period)):
            offset = period // 2 if row % 2 else 0
            for x in range(phase + offset - period, s + period, period):
                draw.ellipse([x - r, y - r, x + r, y + r], fill=rgb2)
    elif pattern == "checked":
        for i, y in enumerate(range(-period, s + period, period)):
            for j, x in enumerate(range(-period, s + period, period)):
                if (i + j) % 2 == 0:
                    draw.rectangle([x + phase, y + phase, x + phase + period, y + phase + period], fill=rgb2)
    elif pattern == "chevron":
        width = max(2, period // 3)
        half = max(2, period // 2)
        for y in range(-2 * period, s + 2 * period, period):
            pts = [(x, y + phase + (half if (x // half) % 2 else 0)) for x in range(0, s + 2 * half, half)]
            draw.line(pts, fill=rgb2, width=width)
    return img


def _shade(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    # A soft directional light over the object so that it reads as a 3-D thing in a photo.
    s = img.size[0]
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s - 0.5
    ramp = 1.0 + rng.uniform(0.10, 0.30) * (xx * math.cos(angle) + yy * math.sin(angle))
    arr = np.asarray(img, dtype=np.float32) * ramp[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _background(size: int, rng: np.random.Generator) -> Image.Image:
    def colour() -> tuple[int, int, int]:
        light = rng.random() < 0.7  # most listing photos are shot on light surfaces
        lo, hi = (150, 255) if light else (20, 150)
        return tuple(int(v) for v in rng.integers(lo, hi, 3))  # type: ignore[return-value]

    kind = rng.integers(0, 4)
    c1 = np.array(colour(), dtype=np.float32)
    if kind == 0:  # flat
        arr = np.broadcast_to(c1, (size, size, 3)).copy()
    elif kind == 1:  # gradient
        c2 = np.array(colour(), dtype=np.float32)
        t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
        arr = (c1 * (1 - t) + c2 * t) * np.ones((1, size, 1), np.float32)
    elif kind == 2:  # wall and floor
        c2 = np.array(colour(), dtype=np.float32)
        horizon = int(size * rng.uniform(0.55, 0.8))
        arr = np.broadcast_to(c1, (size, size, 3)).copy()
        arr[horizon:] = c2
    else:  # fabric / carpet noise
        noise = rng.normal(0, 18, (size // 4, size // 4, 1)).astype(np.float32)
        arr = c1 + np.kron(noise, np.ones((4, 4, 1), np.float32))
    arr = arr + rng.normal(0, 3, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _jitter_rgb(rgb: tuple[int, int, int], rng: np.random.Generator, amount: float) -> tuple[int, int, int]:
    arr = np.array(rgb, dtype=np.float32) + rng.normal(0, amount, 3)
    return tuple(int(v) for v in np.clip(arr, 0, 255))  # type: ignore[return-value]


def render_photo(product: Product, rng: np.random.Generator, size: int) -> Image.Image:
    """One listing photo of `product` (RGB, size x size)."""
    canvas = _background(size, rng)
    # The object is drawn at twice its final size and scaled down: cheap anti-aliasing.
    scale = rng.uniform(0.6, 0.92)
    obj = max(16, int(size * scale))
    big = obj * 2
    mask = Image.new("L", (big, big), 0)
    SILHOUETTES[product.category](ImageDraw.Draw(mask), big, product.variant)
    texture = _shade(_texture(big, product.pattern, product.rgb, product.rgb2, rng), rng)
    if rng.random() < 0.5:  # photos are taken from either side
        mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        texture = texture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    angle = float(rng.uniform(-15, 15))
    mask = mask.rotate(angle, resample=Image.Resampling.BICUBIC).resize((obj, obj), Image.Resampling.LANCZOS)
    texture = texture.rotate(angle, resample=Image.Resampling.BICUBIC).resize((obj, obj), Image.Resampling.LANCZOS)
    # Position: mostly centred, sometimes cropped by the frame as in hurried phone photos.
    span = size - obj
    cx = int(rng.uniform(-0.08, 1.08) * span) if span > 0 else int(rng.uniform(-0.1, 0.1) * obj)
    cy = int(rng.uniform(-0.08, 1.08) * span) if span > 0 else int(rng.uniform(-0.1, 0.1) * obj)
    shadow = mask.filter(ImageFilter.GaussianBlur(obj * 0.04))
    dark = Image.new("RGB", (obj, obj), (0, 0, 0))
    canvas.paste(dark, (cx + int(obj * 0.03), cy + int(obj * 0.04)), shadow.point(lambda v: int(v * 0.35)))
    if rng.random() < 0.25:  # a small unrelated object in the frame
        draw = ImageDraw.Draw(canvas)
        r = int(size * rng.uniform(0.05, 0.12))
        x, y = (int(v) for v in rng.integers(0, size, 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
        else:
            draw.rectangle([x - r, y - r, x + r, y + r], fill=fill)
    canvas.paste(texture, (cx, cy), mask)
    # Lighting: exposure, contrast, white balance; then optional blur and sensor noise.
    arr = np.asarray(canvas, dtype=np.float32)
    gain = rng.uniform(0.75, 1.2) * (1 + rng.normal(0, 0.05, 3))
    contrast = rng.uniform(0.8, 1.15)
    arr = (arr - 128) * contrast + 128
    arr = arr * gain
    arr = arr + rng.normal(0, rng.uniform(0, 6), arr.shape)
    photo = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    return photo


def jpeg_bytes(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------
# Products, split, sessions.


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


def make_products(n: int, seed: int) -> list[Product]:
    root = np.random.SeedSequence([seed, 1])
    n_sellers = max(3, n // 6)
    # Seller sizes are skewed: a few shops list a lot (Zipf-like weights).
    weights = 1.0 / np.arange(1, n_sellers + 1) ** 0.8
    weights /= weights.sum()
    colour_names = list(COLOURS)
    products = []
    for i, child in enumerate(root.spawn(n)):
        rng = np.random.default_rng(child)
        cat = int(rng.integers(0, len(CATEGORIES)))
        colour = colour_names[int(rng.integers(0, len(colour_names)))]
        rgb = _jitter_rgb(COLOURS[colour], rng, 10)
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
                seller_id=f"s{int(rng.choice(n_sellers, p=weights)):04d}",
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
) -> dict:
    """Write the catalog under `out`; returns the manifest."""
    if n_items < 8:
        raise ValueError("--items must be at least 8 (one test product per category needs a few)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    products = make_products(n_items, seed)
    train_ids, test_ids = split_products(products, test_frac, seed)
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
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.catalog",
        description="Write a generated stand-in product catalog (images, titles, interaction logs). "
        "Generated data: not evidence about real marketplaces.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--items", type=int, default=400, help="number of listings (products)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=160, help="photo side in pixels")
    parser.add_argument("--test-frac", type=float, default=0.25, help="share of products held out")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not 0 < args.test_frac < 1:
        parser.error("--test-frac must be between 0 and 1")
    manifest = generate(
        args.out, args.items, args.seed, size=args.image_size, test_frac=args.test_frac, progress=not args.no_progress
    )
    print(json.dumps({k: manifest[k] for k in ("items", "photos", "train_items", "test_items", "sessions", "taps")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
