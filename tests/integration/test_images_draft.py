"""JPEG draft (DCT-scaled) decode gives the same embedding as a full decode (its sizes and colours: tests/unit)."""

from __future__ import annotations

import numpy as np

from app.encode.encoder import OnnxImageEncoder
from app.ingest.decode import load_pixels
from tests.factories import photo


def test_draft_embedding_matches_full_decode(tiny_encoder: OnnxImageEncoder) -> None:
    size = tiny_encoder.image_size
    images = [photo(seed, size=1000) for seed in range(6)]
    full = np.stack([load_pixels(d, size, 10**7, draft=False) for d in images])
    draft = np.stack([load_pixels(d, size, 10**7, draft=True) for d in images])
    assert full.shape == draft.shape == (6, size, size, 3)
    cosines = np.sum(tiny_encoder.embed(full) * tiny_encoder.embed(draft), axis=1)
    assert cosines.min() >= 0.999
