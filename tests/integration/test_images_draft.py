"""JPEG draft (DCT-scaled) decode: smaller decode, same embedding as a full decode."""

from __future__ import annotations

import numpy as np
from PIL import Image

from app.encode.encoder import OnnxImageEncoder
from app.ingest.decode import decode_image, load_pixels
from tests.factories import photo


def test_draft_decodes_large_jpeg_at_reduced_scale_only_for_jpeg() -> None:
    jpeg = photo(1, size=1024)
    assert decode_image(jpeg, max_pixels=10**7).size == (1024, 1024)
    assert decode_image(jpeg, max_pixels=10**7, draft_size=224).size == (256, 256)  # 1/4 scale covers 224
    png = photo(1, size=1024, fmt="PNG")
    assert decode_image(png, max_pixels=10**7, draft_size=224).size == (1024, 1024)


def test_draft_embedding_matches_full_decode(tiny_encoder: OnnxImageEncoder) -> None:
    size = tiny_encoder.image_size
    images = [photo(seed, size=1000) for seed in range(6)]
    full = np.stack([load_pixels(d, size, 10**7, draft=False) for d in images])
    draft = np.stack([load_pixels(d, size, 10**7, draft=True) for d in images])
    assert full.shape == draft.shape == (6, size, size, 3)
    cosines = np.sum(tiny_encoder.embed(full) * tiny_encoder.embed(draft), axis=1)
    assert cosines.min() >= 0.999


def test_draft_keeps_cmyk_colours() -> None:
    img = Image.new("CMYK", (800, 800), (0, 255, 255, 0))  # pure red in CMYK
    from tests.factories import encode

    pixels = load_pixels(encode(img, "JPEG"), 32, 10**7, draft=True)
    red, green, blue = pixels.reshape(-1, 3).mean(axis=0)
    assert red > 200 and green < 60 and blue < 60
