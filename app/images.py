"""Image bytes -> model pixels: safe decode (Pillow) and the shared preprocessing.

Decoding is allow-listed by content (magic bytes), never by file name or Content-Type, and the pixel
cap is checked from the header before any pixel is decoded. Resizing is models/preprocess.py, the same
code the export parity gate checks against HF SiglipImageProcessor.
"""

from __future__ import annotations

import io
import time
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps

from app import metrics
from app.errors import ImageDecodeError, ImageTooLarge, UnsupportedImageType
from models.preprocess import resize_for_model

# Pillow's own bomb guard is replaced by our IMAGE_MAX_PIXELS check; truncated files are errors.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Allowed formats by magic bytes -> Pillow format name. Anything else (TIFF, ICO, SVG, EPS/PS ...) is 415.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"WEBP", 8, "WEBP"),
)


def sniff_format(data: bytes) -> str | None:
    for magic, offset, name in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic and (name != "WEBP" or data[:4] == b"RIFF"):
            return name
    return None


def _reject(reason: str, error: Exception) -> Exception:
    metrics.image_rejected.labels(reason=reason).inc()
    return error


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Bytes -> RGB-convertible Pillow image (first frame, EXIF orientation applied)."""
    fmt = sniff_format(data)
    if fmt is None:
        raise _reject(
            "unsupported_type",
            UnsupportedImageType("the image is not JPEG, PNG, WebP, GIF or BMP (checked by content)"),
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])
            width, height = img.size
            if width * height > max_pixels:
                raise _reject(
                    "too_many_pixels",
                    ImageTooLarge(f"the image is {width}x{height} pixels; the limit is {max_pixels} pixels"),
                )
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img)
    except (ImageTooLarge, UnsupportedImageType):
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError, Warning) as exc:
        raise _reject("decode_error", ImageDecodeError(f"the {fmt} image could not be decoded: {exc}")) from None
    return img


def load_pixels(data: bytes, size: int, max_pixels: int, resample: str = "bicubic") -> np.ndarray:
    """Bytes -> uint8 [size, size, 3] RGB, as the model's input expects."""
    started = time.perf_counter()
    img = decode_image(data, max_pixels=max_pixels)
    try:
        pixels = resize_for_model(img, size, resample)
    except (OSError, ValueError) as exc:
        raise _reject("decode_error", ImageDecodeError(f"the image could not be converted: {exc}")) from None
    metrics.image_decode_duration.observe(time.perf_counter() - started)
    return pixels
