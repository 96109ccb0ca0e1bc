"""Listing photos of the generated catalog: a product's silhouette, colour and pattern over a random background,
with framing, lighting, blur, noise and a distractor, saved as a JPEG."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from models.catalog_products import Product

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


@dataclass(frozen=True)
class View:
    """How one photo frames the product: the catalog's default view and the other views of a multi-photo listing."""

    scale: tuple[float, float] = (0.6, 0.92)  # object side / photo side; above 1 the frame crops it
    max_angle: float = 15.0  # in-plane rotation, degrees either way
    squash: tuple[float, float] | None = None  # width kept when seen from the side (an "other angle" shot)
    gain: tuple[float, float] = (0.75, 1.2)  # exposure
    centred: bool = False  # a close-up is framed on the object's middle, not its corner


FRONT = View()
VIEWS: dict[str, View] = {
    "front": FRONT,
    "angle": View(scale=(0.55, 0.85), max_angle=35.0, squash=(0.5, 0.8)),
    "detail": View(scale=(1.5, 2.3), centred=True),
    "dim": View(gain=(0.4, 0.6)),
}


def render_photo(product: Product, rng: np.random.Generator, size: int, view: View = FRONT) -> Image.Image:
    """One listing photo of `product` (RGB, size x size), framed as `view` says."""
    canvas = _background(size, rng)
    # The object is drawn at twice its final size and scaled down: cheap anti-aliasing.
    scale = rng.uniform(*view.scale)
    obj = max(16, int(size * scale))
    mask, texture = _object(product, rng, obj, view)
    cx, cy = _position(size, obj, rng, view)
    shadow = mask.filter(ImageFilter.GaussianBlur(obj * 0.04))
    dark = Image.new("RGB", mask.size, (0, 0, 0))
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
    return _lighting(canvas, rng, view)


def _object(product: Product, rng: np.random.Generator, obj: int, view: View) -> tuple[Image.Image, Image.Image]:
    """The product's mask and textured, lit, flipped, rotated image at `obj` pixels (narrower when squashed)."""
    big = obj * 2
    mask = Image.new("L", (big, big), 0)
    SILHOUETTES[product.category](ImageDraw.Draw(mask), big, product.variant)
    texture = _shade(_texture(big, product.pattern, product.rgb, product.rgb2, rng), rng)
    if rng.random() < 0.5:  # photos are taken from either side
        mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        texture = texture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    angle = float(rng.uniform(-view.max_angle, view.max_angle))
    width = obj if view.squash is None else max(8, int(obj * rng.uniform(*view.squash)))
    mask = mask.rotate(angle, resample=Image.Resampling.BICUBIC).resize((width, obj), Image.Resampling.LANCZOS)
    texture = texture.rotate(angle, resample=Image.Resampling.BICUBIC).resize((width, obj), Image.Resampling.LANCZOS)
    return mask, texture


def _position(size: int, obj: int, rng: np.random.Generator, view: View) -> tuple[int, int]:
    """Top-left corner: mostly centred, sometimes cropped by the frame as in hurried phone photos."""
    if view.centred:  # a close-up: the object's middle, a little off
        return tuple(int((size - obj) / 2 + rng.uniform(-0.12, 0.12) * obj) for _ in range(2))  # type: ignore[return-value]
    span = size - obj
    cx = int(rng.uniform(-0.08, 1.08) * span) if span > 0 else int(rng.uniform(-0.1, 0.1) * obj)
    cy = int(rng.uniform(-0.08, 1.08) * span) if span > 0 else int(rng.uniform(-0.1, 0.1) * obj)
    return cx, cy


def _lighting(canvas: Image.Image, rng: np.random.Generator, view: View) -> Image.Image:
    """Exposure, contrast, white balance; then optional blur and sensor noise."""
    arr = np.asarray(canvas, dtype=np.float32)
    gain = rng.uniform(*view.gain) * (1 + rng.normal(0, 0.05, 3))
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
