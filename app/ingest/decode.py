"""Image bytes -> model pixels: safe decode (Pillow) and the shared preprocessing.

- Decoding is allow-listed by content (magic bytes), never by file name or Content-Type, and Pillow is
  told to try only that one format: no EPS/PostScript (which would run Ghostscript), TIFF, ICO, SVG...
- Our pixel cap (IMAGE_MAX_PIXELS) is checked from the header before any pixel is decoded; Pillow's
  own decompression-bomb guard stays on as a second line and its warning is an error.
- Only the first frame of an animation is decoded (a GIF of 20,000 frames costs what its first does).
- EXIF orientation is applied; 16-bit grey is scaled (not clipped) to 8 bits; CMYK, palette,
  transparency and L/LA/RGBA become RGB in app/core/model_contract.py (transparency composited on white),
  the same code the export parity gate checks against HF SiglipImageProcessor.
- Any exception a hostile file provokes inside Pillow is a 422 image_decode_error, never a 500.
"""

from __future__ import annotations

import io
import logging
import time
import warnings

import numpy as np
from PIL import ExifTags, Image

from app.core import metrics
from app.core.errors import ImageDecodeError, ImageTooLarge, UnsupportedImageType
from app.core.model_contract import resize_for_model

log = logging.getLogger(__name__)

# Allowed formats by magic bytes -> Pillow format name. Anything else (TIFF, ICO, SVG, EPS/PS ...) is 415.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"WEBP", 8, "WEBP"),
)

_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_WIDE_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def sniff_format(data: bytes) -> str | None:
    for magic, offset, name in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic and (name != "WEBP" or data[:4] == b"RIFF"):
            return name
    return None


def _reject(reason: str, error: Exception) -> Exception:
    metrics.image_rejected.labels(reason=reason).inc()
    return error


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # unreadable EXIF says nothing about orientation; the pixels are still fine
        return 1


def _to_8bit(img: Image.Image) -> Image.Image:
    """16/32-bit grey -> L (or LA when a transparent grey level is set), scaled by 1/256.

    Pillow's own conversion clips at 255, which turns every 16-bit grey photo white.
    """
    wide = np.asarray(img, dtype=np.int64)
    grey = Image.fromarray((np.clip(wide, 0, 65535) >> 8).astype(np.uint8), "L")
    transparent = img.info.get("transparency")
    if isinstance(transparent, int):
        alpha = Image.fromarray(np.where(wide == transparent, 0, 255).astype(np.uint8), "L")
        grey = Image.merge("LA", (grey, alpha))
    return grey


def decode_image(data: bytes, *, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Bytes -> an image that models/preprocess.to_rgb turns into correct RGB (first frame, upright).

    With `draft_size`, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still covers
    draft_size x draft_size: 7-9x faster for 1000^2 photos, embedding cosine >= 0.9999 against a
    full decode (bench/decode.py, BENCHMARKS.md).
    """
    fmt = sniff_format(data)
    if fmt is None:
        raise _reject(
            "unsupported_type",
            UnsupportedImageType("the image is not JPEG, PNG, WebP, GIF or BMP (checked by content)"),
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's complaints about odd files (corrupt EXIF ...)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])  # reads the header only
            width, height = img.size
            if width * height > max_pixels:
                raise ImageTooLarge(f"the image is {width}x{height} pixels; the limit is {max_pixels} pixels")
            img.seek(0)
            if draft_size is not None and fmt == "JPEG":
                img.draft(None, (draft_size, draft_size))  # keep the mode (CMYK stays CMYK), scale only
            img.load()
            if img.mode in _WIDE_GREY:
                img = _to_8bit(img)
            transpose = _ORIENTATION.get(_orientation(img))
            if transpose is not None:
                img = img.transpose(transpose)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise _reject("too_many_pixels", ImageTooLarge(f"the image has too many pixels: {exc}")) from None
    except ImageTooLarge as exc:
        raise _reject("too_many_pixels", exc) from None
    except Exception as exc:  # whatever a hostile file makes Pillow raise is a decode error, not a 500
        log.debug("image decode failed", exc_info=True)
        raise _reject("decode_error", ImageDecodeError(f"the {fmt} image could not be decoded: {exc}")) from None
    return img


def load_pixels(data: bytes, size: int, max_pixels: int, resample: str = "bicubic", draft: bool = True) -> np.ndarray:
    """Bytes -> uint8 [size, size, 3] RGB, as the model's input expects (draft: see decode_image)."""
    return load_pixels_for(data, [(size, resample)], max_pixels, draft)[(size, resample)]


def load_pixels_for(
    data: bytes, inputs: list[tuple[int, str]], max_pixels: int, draft: bool = True
) -> dict[tuple[int, str], np.ndarray]:
    """Bytes -> one uint8 [size, size, 3] RGB array per (size, resample) asked, from ONE decode.

    Several model versions embed each write; they may differ in input size. The draft decode covers the largest.
    """
    started = time.perf_counter()
    largest = max(size for size, _ in inputs)
    img = decode_image(data, max_pixels=max_pixels, draft_size=largest if draft else None)
    pixels: dict[tuple[int, str], np.ndarray] = {}
    try:
        for size, resample in inputs:
            if (size, resample) not in pixels:
                pixels[(size, resample)] = resize_for_model(img, size, resample)
    except Exception as exc:
        log.debug("image conversion failed", exc_info=True)
        raise _reject("decode_error", ImageDecodeError(f"the image could not be converted: {exc}")) from None
    metrics.image_decode_duration.observe(time.perf_counter() - started)
    return pixels
