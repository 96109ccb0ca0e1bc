"""Photo-like images made in-process from a seed, for tests, benchmarks and the export's parity gate.

Three variants, each a pure function of its arguments:

* `photo`: a lit gradient and a few coloured shapes, small and quick (the test suite's listing photo);
* `textured_photo`: the same idea with soft sensor-like noise, fine dark bars and a slight blur, so that a
  JPEG of it decodes like a camera photo does (the benchmarks' 1000x1000 quality-90 images);
* `photo_like_images`: a fixed set in the sizes and modes listings come in (landscape, portrait, odd sizes,
  up- and down-scaling, transparency, a palette image), for checking preprocessing against a reference.

Not to be confused with `models.catalog_render.render_photo`, which draws recognisable products for training data.
Only numpy and Pillow are needed, so importing this module is cheap.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Box = tuple[int, int, int, int]


def encode(img: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    """`img` as a file of format `fmt` (JPEG defaults to quality 90)."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        options.setdefault("quality", 90)
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def _shape(draw: ImageDraw.ImageDraw, kind: int, box: Box, colour: tuple[int, ...]) -> None:
    """Kind 0 an ellipse, 1 a rectangle, 2 a triangle standing on the box's bottom edge."""
    if kind == 0:
        draw.ellipse(box, fill=colour)
    elif kind == 1:
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])], fill=colour)


def photo(seed: int, size: int = 256, fmt: str = "JPEG", quality: int = 90) -> bytes:
    """A square photo-like image: a lit gradient background and a few coloured shapes, distinct per seed."""
    rng = np.random.default_rng(seed)
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    background = (top * (1 - ramp) + bottom * ramp).astype(np.uint8)
    img = Image.fromarray(np.repeat(background, size, axis=1))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = rng.integers(0, size * 3 // 4, 2)
        w, h = rng.integers(size // 8, size // 2, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        _shape(draw, kind, (int(x0), int(y0), int(x0 + w), int(y0 + h)), colour)
    return encode(img, fmt, quality=quality) if fmt == "JPEG" else encode(img, fmt)


def textured_photo(seed: int, width: int = 1000, height: int = 1000, quality: int = 90, fmt: str = "JPEG") -> bytes:
    """A camera-like photo: lit gradient, soft noise, a few hard-edged shapes, text-like bars, slight blur."""
    rng = np.random.default_rng(seed)
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    background = top * (1 - ramp) + bottom * ramp
    noise = rng.normal(0, 6, (height // 8, width // 8, 1)).astype(np.float32)
    noise = np.kron(noise, np.ones((8, 8, 1), dtype=np.float32))[:height, :width]
    pixels = np.clip(np.broadcast_to(background, (height, width, 3)) + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 9))):
        x0, y0 = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height * 3 // 4))
        w, h = int(rng.integers(width // 10, width // 2)), int(rng.integers(height // 10, height // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        _shape(draw, int(rng.integers(0, 3)), (x0, y0, x0 + w, y0 + h), colour)
    for _ in range(int(rng.integers(2, 6))):  # fine detail, like a label or a pattern
        x0, y0 = int(rng.integers(0, width - 60)), int(rng.integers(0, height - 20))
        draw.rectangle((x0, y0, x0 + int(rng.integers(10, 60)), y0 + 3), fill=(20, 20, 20))
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    return encode(img, fmt, quality=quality) if fmt == "JPEG" else encode(img, fmt)


def photo_like_images(seed: int = 0) -> list[Image.Image]:
    """Smooth gradients with hard-edged shapes, in the sizes and modes listings come in.

    Random noise alone is unlike photos (no smooth regions, no edges); these exercise both, plus
    down- and up-scaling, portrait/landscape, transparency and a palette image.
    """
    rng = np.random.default_rng(seed)
    images = []
    for width, height in ((640, 480), (480, 640), (333, 251), (1024, 768), (96, 128), (20, 20)):
        y, x = np.mgrid[0:height, 0:width]
        angle = rng.uniform(0, np.pi)
        t = (x / width * np.cos(angle) + y / height * np.sin(angle)) / 2 + 0.5
        start, end = rng.uniform(0, 255, (2, 3))
        background = start + (end - start) * t[..., None]
        img = Image.fromarray(background.clip(0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, x1 = sorted(rng.integers(0, width, 2))
            y0, y1 = sorted(rng.integers(0, height, 2))
            fill = tuple(int(c) for c in rng.integers(0, 256, 3))
            if rng.random() < 0.5:
                draw.ellipse((x0, y0, x1, y1), fill=fill)
            else:
                draw.rectangle((x0, y0, x1, y1), fill=fill, outline=(0, 0, 0))
        images.append(img)
    # A cut-out product on a transparent background, and a GIF-style palette image.
    rgba = images[2].convert("RGBA")
    alpha = Image.new("L", rgba.size, 0)
    ImageDraw.Draw(alpha).ellipse((40, 30, 290, 220), fill=255)
    rgba.putalpha(alpha)
    images[2] = rgba
    images[4] = images[4].quantize(colors=64)
    return images
