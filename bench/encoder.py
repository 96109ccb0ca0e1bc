"""Encoder speed and agreement: ONNX Runtime fp32 vs int8 vs fp16 vs PyTorch eager, by batch size.

    python -m bench.encoder [--batches 1,2,4,8,16,32] [--reps 2] [--json] [--quick]

All ONNX variants run through app.encode.encoder.OnnxImageEncoder (the service's own session setup) on the
CPU; PyTorch eager runs the same random-weight vision tower (models.export's wrapper: uint8 in,
normalisation and L2 norm inside) under torch.inference_mode. Variants are timed side by side: for each
batch size and repetition every variant runs once, in turn, on the same pixels. Cosine is against ORT
fp32 on the same inputs (random pixels and photo-like images).

Targets: int8 >= 2.5x fp32 throughput on CPU with cosine >= 0.999.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    base_parser,
    cached_model,
    cosine_rows,
    emit,
    log,
    machine_info,
    machine_line,
    table,
)
from models.photos import textured_photo

TARGET_SPEEDUP = 2.5
COSINE_GATE = 0.999
PRECISIONS = ("fp32", "int8", "fp16")


def torch_eager(config: str) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    from models.export import PixelsToEmbedding, load_source

    src = load_source(config=config, seed=0)  # the same seeded weights the ONNX files were exported from
    wrapper = PixelsToEmbedding(src.tower, src.preprocessing).eval()

    def embed(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return wrapper(torch.from_numpy(pixels)).numpy()

    return embed


def has_fused_attention(path: Path) -> bool:
    """Whether an exported model runs attention as ORT's fused MultiHeadAttention kernel."""
    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    return any(node.op_type == "MultiHeadAttention" for node in model.graph.node)


def probe_pixels(size: int, n: int) -> np.ndarray:
    """Half random pixels, half photo-like images resized like the service does."""
    import io

    from PIL import Image

    from app.core.model_contract import resize_for_model

    rng = np.random.default_rng(3)
    half = n // 2
    random = rng.integers(0, 256, (n - half, size, size, 3), dtype=np.uint8)
    photos = [
        resize_for_model(Image.open(io.BytesIO(textured_photo(100 + i, 320, 320))), size, "bicubic")
        for i in range(half)
    ]
    return np.concatenate([random, np.stack(photos)]) if photos else random


def run(*, quick: bool, batches: list[int], reps: int, max_cell_s: float, with_torch: bool) -> dict[str, Any]:
    from tqdm import tqdm

    from app.encode.encoder import OnnxImageEncoder

    machine = machine_info()
    config = "tiny" if quick else "base"
    runners: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    sizes: dict[str, int] = {}
    for precision in PRECISIONS:
        path = cached_model(config, precision)
        if precision == "int8" and not has_fused_attention(path):
            # Made by an export from before attention fusion (models/export.py): timing it would
            # measure the old recipe. Re-export it through the current path (about 2 min for base).
            log(f"{path} predates the fused-attention int8 export; exporting it again ...")
            path.unlink()
            path = cached_model(config, precision)
        enc = OnnxImageEncoder(path, device="cpu")
        runners[f"ort_{precision}"] = enc.embed
        sizes[f"ort_{precision}"] = path.stat().st_size
        image_size = enc.image_size
    if with_torch:
        runners["torch_eager_fp32"] = torch_eager(config)

    int8_fused = has_fused_attention(cached_model(config, "int8"))
    probe = probe_pixels(image_size, 8)
    reference = runners["ort_fp32"](probe)
    cosines = {name: cosine_rows(fn(probe), reference) for name, fn in runners.items()}

    rng = np.random.default_rng(0)
    times: dict[tuple[str, int], list[float]] = {}
    cells = [(b, r) for b in batches for r in range(reps)]
    for batch, rep in tqdm(cells, desc="batch x rep", file=sys.stderr, leave=False):
        pixels = rng.integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8)
        for name, fn in runners.items():
            key = (name, batch)
            if rep == 0:
                fn(pixels)  # warm-up for this shape
            spent = sum(times.get(key, []))
            if rep > 0 and spent > max_cell_s:  # a slow variant at a big batch: keep the run bounded
                continue
            t0 = time.perf_counter()
            fn(pixels)
            times.setdefault(key, []).append(time.perf_counter() - t0)

    rows = []
    for name in runners:
        for batch in batches:
            samples = times.get((name, batch), [])
            best = min(samples) if samples else float("nan")
            median = float(np.median(samples)) if samples else float("nan")
            rows.append(
                {
                    "variant": name,
                    "batch": batch,
                    "median_ms_per_img": round(median * 1e3 / batch, 2),
                    "best_ms_per_img": round(best * 1e3 / batch, 2),
                    "img_per_s": round(batch / best, 2),
                    "runs": len(samples),
                }
            )
    by = {(r["variant"], r["batch"]): r for r in rows}
    paired_all: dict[str, list[float]] = {name: [] for name in runners}
    for r in rows:
        # Paired: each repetition ran fp32 and this variant back to back, so their ratio saw the same load.
        mine, fp32_runs = times.get((r["variant"], r["batch"]), []), times.get(("ort_fp32", r["batch"]), [])
        pairs = [a / b for a, b in zip(fp32_runs, mine, strict=False)]
        paired_all[r["variant"]] += pairs
        r["speedup_vs_ort_fp32"] = round(float(np.median(pairs)), 2) if pairs else float("nan")
    fp32_top = max(by[("ort_fp32", b)]["img_per_s"] for b in batches)
    summary = []
    for name in runners:
        own = [by[(name, b)] for b in batches]
        top = max(own, key=lambda r: r["img_per_s"])
        summary.append(
            {
                "variant": name,
                "min_cosine_vs_ort_fp32": round(float(cosines[name].min()), 6),
                "batch1_ms_per_img": by[(name, batches[0])]["best_ms_per_img"],
                "best_img_per_s": top["img_per_s"],
                "at_batch": top["batch"],
                "speedup_vs_ort_fp32_batch1": by[(name, batches[0])]["speedup_vs_ort_fp32"],
                "speedup_vs_ort_fp32_best": round(top["img_per_s"] / fp32_top, 2),
                "speedup_vs_ort_fp32_paired": round(float(np.median(paired_all[name])), 2),
                "file_mb": round(sizes[name] / 1e6, 1) if name in sizes else None,
            }
        )
    int8 = next(s for s in summary if s["variant"] == "ort_int8")
    speedup = int8["speedup_vs_ort_fp32_paired"]
    cpu_default = "int8" if int8["min_cosine_vs_ort_fp32"] >= COSINE_GATE and speedup >= 1.0 else "fp32"
    return {
        "benchmark": "encoder",
        "quick": quick,
        "machine": machine,
        "model": config,
        "image_size": image_size,
        "batches": batches,
        "reps": reps,
        "rows": rows,
        "summary": summary,
        "int8_speedup": speedup,
        "int8_min_cosine": int8["min_cosine_vs_ort_fp32"],
        "int8_fused_attention": int8_fused,
        "defaults": {"cpu": cpu_default, "cuda": "fp16 (see bench.gpu: only behind its parity gate)"},
        "targets": {
            "int8_speedup_min": TARGET_SPEEDUP,
            "cosine_min": COSINE_GATE,
            "met": speedup >= TARGET_SPEEDUP and int8["min_cosine_vs_ort_fp32"] >= COSINE_GATE,
        },
    }


def render(r: dict[str, Any]) -> str:
    cols = [
        "variant",
        "batch",
        "best_ms_per_img",
        "median_ms_per_img",
        "img_per_s",
        "speedup_vs_ort_fp32",
        "runs",
    ]
    return "\n".join(
        [
            f"encoder: {r['model']} SigLIP ({r['image_size']}px), CPU, batches {r['batches']}, "
            f"{r['reps']} side-by-side repetitions; img/s from the best run of each cell, speedup = median "
            "of the per-repetition ratios (fp32 and the variant ran back to back)",
            machine_line(r["machine"]),
            table(r["rows"], cols),
            table(r["summary"]),
            f"int8 speedup vs fp32 (median of all paired runs, every batch size): {r['int8_speedup']}x, "
            f"min cosine {r['int8_min_cosine']:.6f} -> target "
            f"{'met' if r['targets']['met'] else 'MISSED'} (>= {r['targets']['int8_speedup_min']}x, "
            f">= {r['targets']['cosine_min']})",
            f"defaults: CPU {r['defaults']['cpu']}; CUDA {r['defaults']['cuda']}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n")[0])
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,2,4,8,16,32)")
    parser.add_argument("--reps", type=int, default=None, help="side-by-side repetitions (default 3)")
    parser.add_argument("--max-cell-seconds", type=float, default=20.0, help="stop repeating a slow cell after this")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch eager")
    args = parser.parse_args(argv)
    quick = args.quick
    batches = [int(b) for b in (args.batches or ("1,4" if quick else "1,2,4,8,16,32")).split(",")]
    log("loading the models (exported once into .bench-cache/models) ...")
    result = run(
        quick=quick,
        batches=batches,
        reps=args.reps or (1 if quick else 3),
        max_cell_s=args.max_cell_seconds,
        with_torch=not args.no_torch,
    )
    emit(result, args.json, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
