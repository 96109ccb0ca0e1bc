"""Listings with several photos: all photos vs cover only, and what shared size charts do to the look-alikes.

    python -m bench.several_photos_quality --seed SEED [--items 600] [--photos 1-6] [--size-chart-sellers 4]
        [--steps 150] [--min-cosine C] [--min-listings 5] [--json] [--quick]

Pass a --seed that the repository never names, so the numbers are on a catalog nobody tuned on. Steps, all
with the project's own tools in child processes, cached under .bench-cache/several-photos/:

1. `python -m models.catalog --photos ... --size-chart-sellers ...`: multi-photo listings, several listings per
   product, the largest shops with their size chart on every listing (generated stand-in data);
2. the untrained tiny SigLIP (`python -m models.finetune --init tiny --max-steps 0`, the fine-tune's starting
   point) and the fine-tuned one (`--max-steps --steps` on the catalog's photo/title pairs), each exported
   with `python -m models.export`, as the demo does;
3. `models.evaluate_listings` on the test-split listings: listing-level nDCG@5 / P@1 of all photos
   (boilerplate photos left out) against the cover only, for every listing aggregate of
   models.listing_aggregates (best pair, Chamfer, top-2 mean, mean vector, cover-weighted) with paired
   bootstrap intervals; the top-5 same-product and same-seller shares of
   the size-chart shops' listings with and without the boilerplate rule; the cosine distributions that
   calibrate the rule (size-chart copies vs views of one product vs different products).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import base_parser, cache_dir, emit, log, machine_info
from models.evaluate import BOILERPLATE_MIN_COSINE, BOILERPLATE_MIN_LISTINGS
from models.evaluate_listings import evaluate_listings, format_listing_table


def _tool(*args: str) -> None:
    subprocess.run([sys.executable, "-m", *args], check=True, stdout=sys.stderr)


def _catalog(seed: int, items: int, photos: str, sellers: int, size: int) -> Path:
    out = cache_dir("several-photos") / f"catalog-{items}-{photos}-{sellers}-{size}px-seed{seed}"
    if not (out / "manifest.json").is_file():
        log(f"generating {items} multi-photo listings in {out}")
        shutil.rmtree(out, ignore_errors=True)
        partial = out.with_name(out.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        _tool(
            *("models.catalog", "--out", str(partial), "--items", str(items), "--seed", str(seed)),
            *("--photos", photos, "--size-chart-sellers", str(sellers), "--image-size", str(size), "--no-progress"),
        )
        partial.rename(out)
    return out


def _model(catalog: Path, steps: int, version: str) -> Path:
    """The tiny SigLIP after `steps` fine-tuning steps on the catalog (0: its random starting point), exported."""
    out = catalog / f"{version}.onnx"
    if not out.is_file():
        log(f"fine-tuning the tiny model for {steps} steps and exporting {version}")
        checkpoint = catalog / f"ckpt-{version}"
        _tool(
            *("models.finetune", "--data", str(catalog), "--init", "tiny", "--out", str(checkpoint)),
            *("--max-steps", str(steps), "--seed", "0", "--save-every", "0", "--no-progress"),
        )
        _tool("models.export", "--checkpoint", str(checkpoint), "--out", str(out), "--model-version", version)
    return out


def run(args: Any) -> dict[str, Any]:
    catalog = _catalog(args.seed, args.items, args.photos, args.size_chart_sellers, args.image_size)
    models = {"untrained": _model(catalog, 0, "tiny-untrained"), "finetuned": _model(catalog, args.steps, "tiny-ft")}
    log("evaluating every photo against the cover only")
    figures = evaluate_listings(
        catalog,
        [str(p) for p in models.values()],
        min_cosine=args.min_cosine,
        min_listings=args.min_listings,
        device="cpu",
        n_boot=args.bootstrap,
        progress=False,
    )
    return {
        "catalog": {
            "seed": args.seed,
            "listings": args.items,
            "photos_per_listing": args.photos,
            "size_chart_sellers": args.size_chart_sellers,
            "image_size": args.image_size,
            "finetune_steps": args.steps,
            "note": "generated stand-in data; not evidence about real marketplaces",
        },
        "models": {name: figures[str(path)] for name, path in models.items()},
        "machine": machine_info(),
    }


def render(result: dict[str, Any]) -> str:
    return (
        "\n".join(format_listing_table({name: figures}) for name, figures in result["models"].items())
        + "\n"
        + str(result["catalog"])
    )


def main(argv: list[str] | None = None) -> int:
    p = base_parser("Listing-level quality with several photos per listing, and the boilerplate rule.")
    p.add_argument("--seed", type=int, required=True, help="catalog seed; use one the repository never names")
    p.add_argument("--items", type=int, default=600, help="listings")
    p.add_argument("--photos", default="1-6", help="MIN-MAX photos per listing")
    p.add_argument("--size-chart-sellers", type=int, default=4)
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--steps", type=int, default=300, help="fine-tuning steps")
    p.add_argument("--min-cosine", type=float, default=BOILERPLATE_MIN_COSINE, help="boilerplate near-copy cosine")
    p.add_argument("--min-listings", type=int, default=BOILERPLATE_MIN_LISTINGS, help="boilerplate: other listings")
    p.add_argument("--bootstrap", type=int, default=1000)
    args = p.parse_args(argv)
    if args.quick:
        args.items, args.image_size, args.steps, args.bootstrap = 80, 64, 20, 100
    emit(run(args), args.json, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
