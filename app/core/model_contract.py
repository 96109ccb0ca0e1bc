"""Image preprocessing shared by the exporter (parity images) and the service (app/ingest/decode.py).

The ONNX graph takes uint8 [N, H, W, 3] RGB pixels that are already resized; everything after the
resize (rescale, normalise, transpose) happens inside the graph. So this resize is the only
preprocessing done in Python, and it must match HF SiglipImageProcessor bit for bit: SigLIP resizes
straight to size x size (no aspect-preserving resize, no crop) with Pillow's bicubic filter, after
compositing any transparency on white. Only Pillow and numpy here, so the service can import it
without torch or transformers.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Names as stored in the model's `lookalike.resample` metadata.
RESAMPLE_FILTERS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert to RGB the way HF's convert_to_rgb does: transparency is composited on white.

    A plain convert("RGB") would drop alpha and expose whatever colour the transparent pixels
    happen to store (often black), so a product photo with a transparent background would embed
    differently from the same photo on white.
    """
    has_alpha = "A" in img.getbands() or img.info.get("transparency") is not None
    if not has_alpha:
        return img.convert("RGB")
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def resize_for_model(img: Image.Image, size: int, resample: str = "bicubic") -> np.ndarray:
    """Return the uint8 [size, size, 3] RGB array the model's `pixels` input expects for one image."""
    if resample not in RESAMPLE_FILTERS:
        raise ValueError(f"unknown resample filter {resample!r}; expected one of {sorted(RESAMPLE_FILTERS)}")
    resized = to_rgb(img).resize((size, size), resample=RESAMPLE_FILTERS[resample])
    return np.array(resized, dtype=np.uint8)
