"""JPEG decode + resize: the service's full decode vs JPEG draft (DCT) scaling vs simplejpeg.

    python -m bench.decode [--images 24] [--rounds 5] [--json] [--quick]

Each variant turns the same 1000x1000 JPEG bytes into the model's uint8 [224, 224, 3] input:
- full:              app.ingest.decode.load_pixels (Pillow full-size decode, then bicubic resize) - the service today
- full_reducing_gap: full decode, resize with Pillow's reducing_gap=2 (a box pre-reduction, then bicubic)
- draft:             Pillow Image.draft("RGB", (224, 224)) before decoding: libjpeg scales in the DCT by
                     1/2, 1/4 or 1/8, the largest reduction that keeps >= 224 px; then the same bicubic resize
- draft_2x:          the same, but keeping >= 448 px (a milder reduction)
- simplejpeg:        simplejpeg.decode_jpeg(min_height=224, min_width=224) (libjpeg-turbo DCT scaling), bicubic
Variants are timed round-robin (side by side, the same images, interleaved) and each one's pixels are
embedded by the base model (random weights) and compared with full decode by cosine.
Recommendation: the fastest variant whose minimum cosine is >= 0.999; a variant within 10% of it that
needs no new dependency (Pillow) is preferred, as such a difference is noise on a shared machine.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from app.core.model_contract import RESAMPLE_FILTERS, resize_for_model
from app.ingest.decode import decode_image, load_pixels
from bench.common import (
    base_parser,
    cached_model,
    cosine_rows,
    emit,
    log,
    machine_info,
    machine_line,
    percentile,
    table,
)
from models.photos import textured_photo

MAX_PIXELS = 40_000_000
COSINE_GATE = 0.999
NOISE = 0.10  # timing differences under 10% are not told apart on a shared machine

Variant = Callable[[bytes, int], np.ndarray]


def full(data: bytes, size: int) -> np.ndarray:
    return load_pixels(data, size, MAX_PIXELS, "bicubic")


def full_reducing_gap(data: bytes, size: int) -> np.ndarray:
    img = decode_image(data, max_pixels=MAX_PIXELS).convert("RGB")
    resized = img.resize((size, size), resample=RESAMPLE_FILTERS["bicubic"], reducing_gap=2.0)
    return np.asarray(resized, dtype=np.uint8)


def _draft_decode(data: bytes, size: int, factor: int) -> np.ndarray:
    """What app.ingest.decode.decode_image does, plus Image.draft() between the header check and load()."""
    img = Image.open(io.BytesIO(data), formats=["JPEG"])
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise ValueError("too many pixels")
    # draft() keeps the image at least as large as asked for in both dimensions. SigLIP squashes to a
    # square, so the shorter requested side is the model's size in both directions.
    img.draft("RGB", (size * factor, size * factor))
    img.load()
    img = ImageOps.exif_transpose(img)
    return resize_for_model(img, size, "bicubic")


def draft(data: bytes, size: int) -> np.ndarray:
    return _draft_decode(data, size, 1)


def draft_2x(data: bytes, size: int) -> np.ndarray:
    return _draft_decode(data, size, 2)


def simplejpeg_variant() -> Variant | None:
    try:
        import simplejpeg
    except ImportError:
        return None

    def decode(data: bytes, size: int) -> np.ndarray:
        # min_height/min_width: the smallest DCT scale that keeps the image at least this large.
        # (EXIF orientation is not applied by simplejpeg; the service would read it from the header.)
        arr = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=size, min_width=size)
        return resize_for_model(Image.fromarray(arr), size, "bicubic")

    return decode


def variants() -> dict[str, Variant]:
    out: dict[str, Variant] = {
        "full": full,
        "full_reducing_gap": full_reducing_gap,
        "draft": draft,
        "draft_2x": draft_2x,
    }
    sj = simplejpeg_variant()
    if sj is not None:
        out["simplejpeg"] = sj
    return out


def run(*, quick: bool, images: int, rounds: int, side: int) -> dict[str, Any]:
    from tqdm import tqdm

    from app.encode.encoder import OnnxImageEncoder

    machine = machine_info()
    config = "tiny" if quick else "base"
    encoder = OnnxImageEncoder(cached_model(config), device="cpu")
    size = encoder.image_size
    log(f"making {images} photo-like {side}x{side} JPEGs (quality 90) ...")
    jpegs = [textured_photo(seed, side, side) for seed in range(images)]
    chosen = variants()
    timings: dict[str, list[float]] = {name: [] for name in chosen}
    pixels: dict[str, np.ndarray] = {}
    for name, fn in chosen.items():  # warm-up, and the pixels each variant produces
        pixels[name] = np.stack([fn(data, size) for data in jpegs])
    for _ in tqdm(range(rounds), desc="decode rounds", file=sys.stderr, leave=False):
        for data in jpegs:
            for name, fn in chosen.items():  # round-robin per image: side by side under the same load
                t0 = time.perf_counter()
                fn(data, size)
                timings[name].append(time.perf_counter() - t0)
    log(f"embedding every variant's pixels with the {config} model ...")
    reference = encoder.embed(pixels["full"])
    full_p50 = percentile(timings["full"], 50) * 1e3
    rows = []
    for name in chosen:
        vectors = reference if name == "full" else encoder.embed(pixels[name])
        cos = cosine_rows(vectors, reference)
        p50 = percentile(timings[name], 50) * 1e3
        rows.append(
            {
                "variant": name,
                "p50_ms": round(p50, 3),
                "p90_ms": round(percentile(timings[name], 90) * 1e3, 3),
                "speedup_vs_full": round(full_p50 / p50, 2) if p50 > 0 else 0.0,
                "img_per_s_one_core": round(1e3 / p50, 1) if p50 > 0 else 0.0,
                "min_cosine": round(float(cos.min()), 6),
                "mean_cosine": round(float(cos.mean()), 6),
                "pixel_mean_abs_diff": round(float(np.abs(pixels[name].astype(np.int16) - pixels["full"]).mean()), 3),
            }
        )
    eligible = [r for r in rows if r["min_cosine"] >= COSINE_GATE]
    fastest = min(eligible, key=lambda r: r["p50_ms"])
    # Within NOISE of the fastest counts as a tie; a tie goes to the variant that needs no new dependency
    # (Pillow's variants come first in `rows`).
    best = next(r for r in eligible if r["p50_ms"] <= fastest["p50_ms"] * (1 + NOISE))
    return {
        "benchmark": "decode",
        "quick": quick,
        "machine": machine,
        "model": config,
        "model_image_size": size,
        "image_side": side,
        "images": images,
        "rounds": rounds,
        "simplejpeg_available": "simplejpeg" in chosen,
        "variants": rows,
        "cosine_gate": COSINE_GATE,
        "fastest": fastest["variant"],
        "recommended": best["variant"],
    }


def render(r: dict[str, Any]) -> str:
    notes = [] if r["simplejpeg_available"] else ["simplejpeg: not installed (pip install simplejpeg), not measured"]
    return "\n".join(
        [
            f"decode + resize {r['image_side']}x{r['image_side']} JPEG -> {r['model_image_size']}px; "
            f"{r['images']} images x {r['rounds']} rounds, one thread; cosine through the {r['model']} model",
            machine_line(r["machine"]),
            table(r["variants"]),
            *notes,
            f"fastest with min cosine >= {r['cosine_gate']}: {r['fastest']}; recommended: {r['recommended']} "
            "(within 10% of the fastest, preferring no new dependency)",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=None, help="distinct JPEGs (default 24; quick 4)")
    parser.add_argument("--rounds", type=int, default=None, help="timed passes over the images (default 5)")
    parser.add_argument("--side", type=int, default=1000, help="JPEG width and height (default 1000)")
    args = parser.parse_args(argv)
    quick = args.quick
    result = run(
        quick=quick,
        images=args.images or (4 if quick else 24),
        rounds=args.rounds or (1 if quick else 5),
        side=args.side if not quick else min(args.side, 400),
    )
    emit(result, args.json, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
