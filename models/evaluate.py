"""Offline evaluation: rank held-out listings by image similarity, score against interaction logs.

    python -m models.evaluate --data data/catalog --model tiny-ft.onnx --model tiny-untrained.onnx \
        --baseline colorhist --baseline pca128:tiny-untrained.onnx [--json]

Protocol (the paper's offline loop, on whatever --data holds):
* Queries and candidates are the test-split listings (split.json "test"; all listings when there is no
  split.json), so products seen in fine-tuning never appear. Each query ranks every other test listing
  by cosine similarity of the main photos' embeddings.
* Relevance comes from interactions.jsonl: rel(q, c) = the number of sessions that viewed q and tapped
  c. Queries with no tapped test listing are left out (their count is reported).
* nDCG@5 (linear gains), precision@1, recall@10 (rel > 0 counts as relevant), as in models.metrics;
  95% percentile bootstrap intervals over queries (paired: the same resamples for every system); the
  change relative to the FIRST --model with its paired interval.

Models are run exactly as the service runs them: photo bytes -> app.ingest.decode.load_pixels (decode, EXIF,
RGB, the shared resize) -> app.encode.encoder.OnnxImageEncoder (ONNX Runtime, preprocessing from the model's
metadata). Baselines:
* colorhist: an 8x8x8 joint RGB histogram of the photo (64x64, same decoding), square-rooted and
  L2-normalised (cosine on it is the Hellinger affinity) - what "looks alike" means without a model.
* pcaN:MODEL.onnx (e.g. pca128:untrained.onnx): MODEL's embeddings reduced to N dimensions by a PCA
  fitted on the TRAIN-split photos, then L2-normalised: the shape of the paper's baseline (a
  non-fine-tuned model's embeddings compressed to 128-d). When MODEL's dimension is <= N the PCA is a
  centred rotation, which still changes cosine rankings through the centring.

`--listings`: multi-photo listings (a catalog from `python -m models.catalog --photos`), listing-level
nDCG@5 / P@1 of all photos (by default the service's score, chamfer_symmetric; boilerplate photos left out)
against the cover only, with same-product relevance, and the boilerplate measure; see
models/evaluate_listings.py.

`--json` prints one object keyed by each --model path as given and each baseline spec as given, each
value holding ndcg@5, precision@1, recall@10, their ci95, relative_to_first (+ ci), queries, candidates.

On the generated catalog (models.catalog) these numbers are evidence that the pipeline works, not about
real marketplaces.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from app.core.jsonl import read_jsonl
from app.core.settings import Settings
from app.encode.encoder import OnnxImageEncoder
from app.ingest.decode import load_pixels
from models.listing_aggregates import AGGREGATES, DEFAULT_AGGREGATE
from models.metrics import (
    METRICS,
    bootstrap_ci,
    bootstrap_indices,
    bootstrap_relative_ci,
    query_metrics,
)

MAX_PIXELS = int(Settings.model_fields["image_max_pixels"].default)  # the service's own limit
HIST_BINS = 8
HIST_SIZE = 64
EMBED_BATCH = 32
PCA_RE = re.compile(r"^pca(\d+):(.+)$")
BOILERPLATE_MIN_COSINE = 0.997  # --listings: size-chart copies >= 0.9972 on the tiny models (several_photos_quality)
BOILERPLATE_MIN_LISTINGS = 5  # the service's LOOKALIKE_BOILERPLATE_MIN_LISTINGS default


@dataclass
class EvalData:
    test_ids: list[str]
    train_ids: list[str]
    image: dict[str, Path]  # item_id -> main photo
    rel: np.ndarray  # [T, T] tap counts among test listings (diagonal 0)
    queries: np.ndarray  # test indices with at least one relevant candidate
    sessions: int


def load_eval_data(data: Path) -> EvalData:
    items = read_jsonl(data / "items.jsonl")
    image = {it["item_id"]: (data / it["image"]) for it in items}  # absolute paths stay absolute under /
    split_file = data / "split.json"
    if split_file.exists():
        split = json.loads(split_file.read_text())
        test_ids, train_ids = list(split["test"]), list(split.get("train", []))
    else:
        test_ids, train_ids = [it["item_id"] for it in items], []
    pos = {iid: i for i, iid in enumerate(test_ids)}
    rel = np.zeros((len(test_ids), len(test_ids)), np.float64)
    sessions = 0
    for s in read_jsonl(data / "interactions.jsonl"):
        q = pos.get(s["viewed"])
        if q is None:
            continue
        sessions += 1
        for c in set(s["tapped"]):  # one session counts a listing once, however often it was tapped
            if c in pos and pos[c] != q:
                rel[q, pos[c]] += 1
    queries = np.flatnonzero(rel.sum(axis=1) > 0)
    if len(queries) == 0:
        raise SystemExit(f"no test query in {data} has a tapped test listing; nothing to evaluate")
    return EvalData(test_ids, train_ids, image, rel, queries, sessions)


def _embed(
    paths: list[Path],
    size: int,
    fn: Callable[[np.ndarray], np.ndarray],
    desc: str,
    progress: bool,
    resample: str = "bicubic",
) -> np.ndarray:
    out = []
    for start in tqdm(
        range(0, len(paths), EMBED_BATCH), desc=desc, unit="batch", disable=not progress, file=sys.stderr
    ):
        chunk = paths[start : start + EMBED_BATCH]
        pixels = np.stack([load_pixels(p.read_bytes(), size, MAX_PIXELS, resample) for p in chunk])
        out.append(fn(pixels))
    return np.concatenate(out).astype(np.float32)


def onnx_embeddings(
    model: Path, paths: list[Path], device: str, threads: int, progress: bool
) -> tuple[np.ndarray, OnnxImageEncoder]:
    encoder = OnnxImageEncoder(model, device=device, threads=threads)
    meta = encoder.meta  # the size and resize filter the model's metadata names, as the service uses them
    return _embed(paths, meta.image_size, encoder.embed, f"embed {model.name}", progress, meta.resample), encoder


def colour_histogram(pixels: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """uint8 [N, H, W, 3] -> [N, bins^3] sqrt-normalised joint RGB histograms (unit L2 norm)."""
    q = (pixels.astype(np.int64) * bins) // 256
    codes = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    hist = np.stack([np.bincount(c.ravel(), minlength=bins**3) for c in codes]).astype(np.float64)
    hist = np.sqrt(hist / hist.sum(axis=1, keepdims=True))
    return (hist / np.linalg.norm(hist, axis=1, keepdims=True)).astype(np.float32)


def fit_pca(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components [k, D]) with k = min(dim, D, n)."""
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[: min(dim, vt.shape[0])]


def pca_project(x: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    y = (x - mean) @ components.T
    return (y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def score(emb: np.ndarray, data: EvalData) -> np.ndarray:
    """Per-query metrics [Q, 3] for test embeddings `emb` (rows L2-normalised, same order as test_ids)."""
    sims = emb @ emb.T
    idx = np.arange(len(data.test_ids))
    rows = []
    for q in data.queries:
        cand = idx != q
        rows.append(query_metrics(sims[q, cand], data.rel[q, cand]))
    return np.array(rows)


def evaluate(
    data_dir: Path,
    models: list[str],
    baselines: list[str],
    *,
    device: str = "auto",
    threads: int = 0,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, dict]:
    data = load_eval_data(data_dir)
    systems = _embed_systems(data, data_dir, models, baselines, device, threads, progress)
    idx = bootstrap_indices(len(data.queries), n_boot, seed)
    per_query = {name: score(emb, data) for name, (emb, _) in systems.items()}
    reference = per_query[models[0]] if models else next(iter(per_query.values()))
    result: dict[str, dict] = {}
    for name, pq in per_query.items():
        mean = pq.mean(axis=0)
        ci = bootstrap_ci(pq, idx)
        rel_mean = mean / reference.mean(axis=0) - 1
        rel_ci = bootstrap_relative_ci(pq, reference, idx)
        result[name] = {
            **{m: round(float(mean[j]), 6) for j, m in enumerate(METRICS)},
            "ci95": {m: [round(float(ci[j, 0]), 6), round(float(ci[j, 1]), 6)] for j, m in enumerate(METRICS)},
            "relative_to_first": {m: round(float(rel_mean[j]), 6) for j, m in enumerate(METRICS)},
            "relative_ci95": {
                m: [round(float(rel_ci[j, 0]), 6), round(float(rel_ci[j, 1]), 6)] for j, m in enumerate(METRICS)
            },
            "queries": len(data.queries),
            "candidates": len(data.test_ids) - 1,
            **systems[name][1],
        }
    return result


def _embed_systems(
    data: EvalData,
    data_dir: Path,
    models: list[str],
    baselines: list[str],
    device: str,
    threads: int,
    progress: bool,
) -> dict[str, tuple[np.ndarray, dict]]:
    """name -> (test-photo embeddings, what to report about the system), models first, then baselines."""
    test_paths = [data.image[i] for i in data.test_ids]
    systems: dict[str, tuple[np.ndarray, dict]] = {}
    for name in models:
        emb, enc = onnx_embeddings(Path(name), test_paths, device, threads, progress)
        about = {"model_version": enc.model_version, "dim": enc.dim, "precision": enc.precision}
        systems[name] = (emb, about | {"image_size": enc.image_size})
    for spec in baselines:
        if spec == "colorhist":
            emb = _embed(test_paths, HIST_SIZE, colour_histogram, "colour histograms", progress)
            systems[spec] = (emb, {"dim": emb.shape[1]})
            continue
        match = PCA_RE.match(spec)
        if not match:
            raise SystemExit(f"unknown baseline {spec!r}; use colorhist or pcaN:MODEL.onnx (e.g. pca128:m.onnx)")
        dim, model = int(match.group(1)), Path(match.group(2))
        if not data.train_ids:
            raise SystemExit(f"{spec}: the PCA is fitted on train-split photos and {data_dir} has no split.json")
        emb, enc = onnx_embeddings(model, test_paths, device, threads, progress)
        train, _ = onnx_embeddings(model, [data.image[i] for i in data.train_ids], device, threads, progress)
        mean, comps = fit_pca(train, dim)
        systems[spec] = (
            pca_project(emb, mean, comps),
            {"model_version": enc.model_version, "dim": comps.shape[0], "pca_fitted_on": len(data.train_ids)},
        )
    return systems


def format_table(result: dict[str, dict], first: str) -> str:
    width = max(len(n) for n in result) + 2
    head = f"{'system':<{width}}" + "".join(f"{m + ' [95% CI]':>26}" for m in METRICS) + f"{'nDCG@5 vs first':>26}"
    lines = [head, "-" * len(head)]
    for name, r in result.items():
        cells = "".join(f"{r[m]:>8.4f} [{r['ci95'][m][0]:.3f}, {r['ci95'][m][1]:.3f}]".rjust(26) for m in METRICS)
        lo, hi = r["relative_ci95"]["ndcg@5"]
        change = f"{r['relative_to_first']['ndcg@5']:+.1%} [{lo:+.1%}, {hi:+.1%}]"
        lines.append(f"{name:<{width}}{cells}{change:>26}")
    any_r = next(iter(result.values()))
    lines.append(f"{any_r['queries']} queries, {any_r['candidates']} candidates each; relative change vs {first}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m models.evaluate",
        description="Offline nDCG@5 / precision@1 / recall@10 of ONNX image models on a catalog.",
    )
    p.add_argument("--data", type=Path, required=True, help="catalog dir (items.jsonl, interactions.jsonl, split.json)")
    p.add_argument(
        "--model", action="append", default=[], help="exported .onnx (repeatable; the first is the reference)"
    )
    p.add_argument("--baseline", action="append", default=[], help="colorhist | pcaN:MODEL.onnx (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--listings",
        action="store_true",
        help="multi-photo listings (catalog --photos): all photos vs cover only, same-product relevance, boilerplate",
    )
    p.add_argument(
        "--boilerplate-min-cosine",
        type=float,
        default=BOILERPLATE_MIN_COSINE,
        help="with --listings: a near-copy of a photo lies at this cosine or above",
    )
    p.add_argument(
        "--boilerplate-min-listings",
        type=int,
        default=BOILERPLATE_MIN_LISTINGS,
        help="with --listings: a photo with near-copies on this many other listings is boilerplate",
    )
    p.add_argument(
        "--aggregate",
        choices=list(AGGREGATES),
        default=DEFAULT_AGGREGATE,
        help="with --listings: how photo cosines make all_photos' listing score (see models/listing_aggregates.py)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    names = args.model + args.baseline
    if not names:
        p.error("give at least one --model or --baseline")
    if len(set(names)) != len(names):
        p.error("each --model / --baseline may be given once (they key the output)")
    if args.listings:
        return _main_listings(p, args)
    result = evaluate(
        args.data,
        args.model,
        args.baseline,
        device=args.device,
        threads=args.threads,
        n_boot=args.bootstrap,
        seed=args.seed,
        progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(format_table(result, names[0]))
    return 0


def _main_listings(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    # Imported here: models.evaluate_listings builds on this module's embedding code.
    from models.evaluate_listings import evaluate_listings, format_listing_table

    if args.baseline:
        p.error("--listings compares the photos of --model models; it takes no --baseline")
    if args.boilerplate_min_listings < 1:
        p.error("--boilerplate-min-listings must be at least 1")
    result = evaluate_listings(
        args.data,
        args.model,
        min_cosine=args.boilerplate_min_cosine,
        min_listings=args.boilerplate_min_listings,
        aggregate=args.aggregate,
        device=args.device,
        threads=args.threads,
        n_boot=args.bootstrap,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(json.dumps(result, indent=1) if args.json else format_listing_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
