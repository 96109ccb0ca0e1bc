"""Safe decode without an app: odd but valid images come out as the right RGB colours, EXIF orientation is
applied, the pixel cap is checked from the header; JPEG draft (DCT-scaled) decode."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.core.errors import ImageTooLarge
from app.ingest.decode import decode_image, load_pixels
from tests.factories import encode, photo
from tests.hostile_corpus import BLUE, RED, OddValid, exif_rotated_jpeg, hostile, odd_valid

HOSTILE = {case.name: case for case in hostile()}
ODD = {case.name: case for case in odd_valid()}


@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_valid_image_becomes_the_right_rgb(name: str) -> None:
    case: OddValid = ODD[name]
    pixels = load_pixels(case.data, 32, max_pixels=40_000_000)
    assert pixels.shape == (32, 32, 3)
    assert pixels.dtype == np.uint8
    worst = int(np.abs(pixels.astype(int) - np.array(case.rgb)).max())
    assert worst <= case.tolerance, f"{name}: off by {worst} from {case.rgb} (got {pixels[0, 0]})"


def test_exif_orientation_is_applied() -> None:
    img = decode_image(exif_rotated_jpeg(), max_pixels=10**6).convert("RGB")
    assert img.size == (32, 64)  # stored 64x32, displayed upright
    top, bottom = np.array(img.getpixel((16, 4))), np.array(img.getpixel((16, 60)))
    assert np.abs(top - RED).max() <= 6
    assert np.abs(bottom - BLUE).max() <= 6


def test_pixel_cap_is_checked_before_decoding() -> None:
    # 12000 x 12000 at 1 bit: 14 KB on disk. Refused from the header, so no 144 MP buffer is made.
    with pytest.raises(ImageTooLarge):
        decode_image(HOSTILE["png_bomb_1bit_12000x12000"].data, max_pixels=40_000_000)


def test_draft_decodes_large_jpeg_at_reduced_scale_only_for_jpeg() -> None:
    jpeg = photo(1, size=1024)
    assert decode_image(jpeg, max_pixels=10**7).size == (1024, 1024)
    assert decode_image(jpeg, max_pixels=10**7, draft_size=224).size == (256, 256)  # 1/4 scale covers 224
    png = photo(1, size=1024, fmt="PNG")
    assert decode_image(png, max_pixels=10**7, draft_size=224).size == (1024, 1024)


def test_draft_keeps_cmyk_colours() -> None:
    img = Image.new("CMYK", (800, 800), (0, 255, 255, 0))  # pure red in CMYK
    pixels = load_pixels(encode(img, "JPEG"), 32, 10**7, draft=True)
    red, green, blue = pixels.reshape(-1, 3).mean(axis=0)
    assert red > 200 and green < 60 and blue < 60
