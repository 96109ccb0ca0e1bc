"""Listing-level offline evaluation of multi-photo listings: every photo against the cover only, and boilerplate.

    python -m models.evaluate --data data/listings --model tiny-ft.onnx --listings [--json]

Reads a catalog written by `python -m models.catalog --photos MIN-MAX` (items.jsonl `images`, listings.jsonl).

* Relevance: the other listings of the same product (listings.jsonl product_id), gain 1. Queries and
  candidates are the test-split listings; a query with no other listing of its product in the split is
  left out. nDCG@5, precision@1, recall@10 as in models.metrics, paired bootstrap intervals over queries.
* cover_only: a listing is its cover's embedding; the score is the covers' cosine.
* all_photos: --aggregate of models.listing_aggregates over each listing's photos, boilerplate photos left
  out on both sides (a listing whose photos are all boilerplate uses them anyway). The default is the
  service's score for GET /similar (app/store/photos.py), chamfer_symmetric: the mean over the query's
  photos of each one's best cosine among the candidate's photos, averaged with the same the other way
  round. mean_vector (the cosine of the listings' re-normalised mean usable photo vectors) scored higher
  still on the generated catalogs, but the service's one MaxSim query per listing cannot serve it
  (docs/architecture.md "Several photos").
  all_photos_without_rule: the same with no photo left out. aggregates: every aggregate, each against
  cover only.
* Boilerplate rule (the service's): a photo is boilerplate when photos of at least --boilerplate-min-listings
  OTHER listings lie at cosine >= --boilerplate-min-cosine of it, i.e. it is on more than that many listings;
  the matching photos of those listings are marked with it. Marked over the whole catalog (train and test),
  as a service holding every listing would.
* top5: for the test listings that carry a size chart, the share of their top-5 look-alikes that are the
  same product, and that are merely the same seller's (another product), per ranking.
* cosines: the calibration of the rule's cosine: size-chart copies of one shop (same bytes, re-encoded,
  resized), charts of different shops, views of one product, photos of different products.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.core.jsonl import read_jsonl
from models.evaluate import onnx_embeddings
from models.listing_aggregates import AGGREGATES, DEFAULT_AGGREGATE, cover_only, listing_photos
from models.metrics import METRICS, bootstrap_ci, bootstrap_indices, bootstrap_relative_ci, query_metrics

SIZE_CHART = "size_chart"  # models.catalog_listings' name for the chart in listings.jsonl `views`
PERCENTILES = (0, 1, 5, 50, 95, 99, 99.9, 100)


@dataclass
class ListingData:
    ids: list[str]  # every listing, in items.jsonl order
    photos: list[Path]  # every photo, listing by listing, each listing's cover first
    starts: np.ndarray  # index in `photos` of each listing's first photo
    owner: np.ndarray  # listing index of each photo
    product: np.ndarray  # product code of each listing
    seller: np.ndarray  # seller code of each listing
    chart: np.ndarray  # bool per photo: the generator put a size chart there (ground truth, never used to rank)
    test: np.ndarray  # listing indices of the test split


def load_listing_data(data: Path) -> ListingData:
    if not (data / "listings.jsonl").is_file():
        raise SystemExit(f"--listings needs {data}/listings.jsonl (written by `python -m models.catalog --photos`)")
    items = read_jsonl(data / "items.jsonl")
    truth = {t["item_id"]: t for t in read_jsonl(data / "listings.jsonl")}
    photos, starts, owner, chart = [], [], [], []
    for k, it in enumerate(items):
        images = it.get("images") or [it["image"]]
        views = truth[it["item_id"]]["views"]
        starts.append(len(photos))
        photos += [data / p for p in images]
        owner += [k] * len(images)
        chart += [v == SIZE_CHART for v in views]
    ids = [it["item_id"] for it in items]
    split = json.loads((data / "split.json").read_text()) if (data / "split.json").is_file() else {"test": ids}
    test_set = set(split["test"])
    return ListingData(
        ids=ids,
        photos=photos,
        starts=np.array(starts),
        owner=np.array(owner),
        product=_codes([truth[i]["product_id"] for i in ids]),
        seller=_codes([truth[i]["seller_id"] for i in ids]),
        chart=np.array(chart, bool),
        test=np.array([k for k, i in enumerate(ids) if i in test_set]),
    )


def _codes(values: list[str]) -> np.ndarray:
    return np.unique(np.array(values), return_inverse=True)[1]


def boilerplate_photos(emb: np.ndarray, owner: np.ndarray, min_cosine: float, min_listings: int) -> np.ndarray:
    """bool per photo: near-copies (cosine >= min_cosine) on >= min_listings other listings, or one of those copies."""
    near = emb @ emb.T >= min_cosine
    near[owner[:, None] == owner[None, :]] = False
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    listings_near = np.logical_or.reduceat(near, starts, axis=1)  # [photos, listings]
    marked = listings_near.sum(axis=1) >= min_listings
    return marked | (near & marked[None, :]).any(axis=1)


def rank_metrics(scores: np.ndarray, product: np.ndarray) -> np.ndarray:
    """Per-query [ndcg@5, precision@1, recall@10], relevance = same product; queries without one are left out."""
    rows = []
    idx = np.arange(len(product))
    for q in idx:
        rel = (product == product[q]).astype(np.float64)
        cand = idx != q
        if rel[cand].sum() > 0:
            rows.append(query_metrics(scores[q, cand], rel[cand]))
    return np.array(rows)


def top5_shares(scores: np.ndarray, product: np.ndarray, seller: np.ndarray, queries: np.ndarray) -> dict:
    """Mean share of the top-5 look-alikes that are the same product / the same seller's other products."""
    same_product, same_seller = [], []
    for q in queries:
        order = np.argsort(-scores[q], kind="stable")
        top = order[order != q][:5]
        same_product.append(np.mean(product[top] == product[q]))
        same_seller.append(np.mean((seller[top] == seller[q]) & (product[top] != product[q])))
    return {
        "same_product": round(float(np.mean(same_product)), 6),
        "same_seller_other_product": round(float(np.mean(same_seller)), 6),
    }


def cosine_groups(emb: np.ndarray, data: ListingData) -> dict[str, dict]:
    """Percentiles of photo-pair cosines (pairs from different listings) per group, for the boilerplate threshold."""
    sims = emb @ emb.T
    upper = np.triu(data.owner[:, None] != data.owner[None, :], k=1)
    product, seller = data.product[data.owner], data.seller[data.owner]
    chart = data.chart
    groups = {
        "size_chart_copies": upper & chart[:, None] & chart[None, :] & (seller[:, None] == seller[None, :]),
        "size_charts_of_other_shops": upper & chart[:, None] & chart[None, :] & (seller[:, None] != seller[None, :]),
        "views_of_one_product": upper & ~chart[:, None] & ~chart[None, :] & (product[:, None] == product[None, :]),
        "different_products": upper & ~chart[:, None] & ~chart[None, :] & (product[:, None] != product[None, :]),
    }
    out = {}
    for name, mask in groups.items():
        values = sims[mask]
        stats = {f"p{p:g}": round(float(np.percentile(values, p)), 6) for p in PERCENTILES} if values.size else {}
        out[name] = {"pairs": int(values.size), **stats}
    return out


def _summary(per_query: np.ndarray, idx: np.ndarray, reference: np.ndarray | None) -> dict:
    mean, ci = per_query.mean(axis=0), bootstrap_ci(per_query, idx)
    out = {
        **{m: round(float(mean[j]), 6) for j, m in enumerate(METRICS)},
        "ci95": {m: [round(float(ci[j, 0]), 6), round(float(ci[j, 1]), 6)] for j, m in enumerate(METRICS)},
    }
    if reference is not None:
        rel = mean / reference.mean(axis=0) - 1
        rel_ci = bootstrap_relative_ci(per_query, reference, idx)
        out["relative_to_cover"] = {m: round(float(rel[j]), 6) for j, m in enumerate(METRICS)}
        out["relative_ci95"] = {
            m: [round(float(rel_ci[j, 0]), 6), round(float(rel_ci[j, 1]), 6)] for j, m in enumerate(METRICS)
        }
    return out


def evaluate_model(
    emb: np.ndarray,
    data: ListingData,
    min_cosine: float,
    min_listings: int,
    n_boot: int,
    seed: int,
    aggregate: str = DEFAULT_AGGREGATE,
) -> dict:
    """Every figure of one model, from its embeddings of every photo (rows L2-normalised, data.photos order)."""
    marked = boilerplate_photos(emb, data.owner, min_cosine, min_listings)
    in_test = np.isin(data.owner, data.test)
    owner = np.searchsorted(data.test, data.owner[in_test])  # test listings renumbered 0..T-1
    product, seller = data.product[data.test], data.seller[data.test]
    photos = listing_photos(emb[in_test], owner, ~marked[in_test])
    every = {name: score(photos) for name, score in AGGREGATES.items()}
    no_rule = listing_photos(emb[in_test], owner, np.ones(len(owner), bool))
    rankings = {
        "cover_only": cover_only(photos),
        "all_photos": every[aggregate],
        "all_photos_without_rule": AGGREGATES[aggregate](no_rule),
    }
    per_query = {name: rank_metrics(s, product) for name, s in rankings.items()}
    if len(per_query["cover_only"]) == 0:
        raise SystemExit("no test listing has another listing of its product in the test split")
    idx = bootstrap_indices(len(per_query["cover_only"]), n_boot, seed)
    result: dict = {
        name: _summary(pq, idx, None if name == "cover_only" else per_query["cover_only"])
        for name, pq in per_query.items()
    }
    result["aggregate"] = aggregate
    result["aggregates"] = {
        name: _summary(rank_metrics(s, product), idx, per_query["cover_only"]) for name, s in every.items()
    }
    chart_queries = np.unique(owner[data.chart[in_test]])
    result["queries"] = len(per_query["cover_only"])
    result["candidates"] = len(data.test) - 1
    result["boilerplate"] = {
        "min_cosine": min_cosine,
        "min_listings": min_listings,
        "photos": len(data.photos),
        "marked_photos": int(marked.sum()),
        "size_chart_photos": int(data.chart.sum()),
        "size_charts_marked": int((marked & data.chart).sum()),
        "product_photos_marked": int((marked & ~data.chart).sum()),
        "chart_queries": len(chart_queries),
        "top5": {name: top5_shares(s, product, seller, chart_queries) for name, s in rankings.items()},
    }
    result["cosines"] = cosine_groups(emb, data)
    return result


def evaluate_listings(
    data_dir: Path,
    models: list[str],
    *,
    min_cosine: float,
    min_listings: int,
    device: str = "auto",
    threads: int = 0,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
    aggregate: str = DEFAULT_AGGREGATE,
) -> dict[str, dict]:
    data = load_listing_data(data_dir)
    result = {}
    for name in models:
        emb, enc = onnx_embeddings(Path(name), data.photos, device, threads, progress)
        figures = evaluate_model(emb, data, min_cosine, min_listings, n_boot, seed, aggregate)
        result[name] = {**figures, "model_version": enc.model_version, "dim": enc.dim}
    return result


def format_listing_table(result: dict[str, dict]) -> str:
    lines = []
    for name, r in result.items():
        lines.append(f"{name} ({r['queries']} queries, {r['candidates']} candidates each)")
        for system in ("cover_only", "all_photos", "all_photos_without_rule"):
            s = r[system]
            change = "" if system == "cover_only" else f"  nDCG@5 vs cover {s['relative_to_cover']['ndcg@5']:+.1%}"
            lines.append(f"  {system:<25} nDCG@5 {s['ndcg@5']:.4f}  P@1 {s['precision@1']:.4f}{change}")
        lines.append(f"  all_photos is {r['aggregate']}; every aggregate (boilerplate left out), vs cover [95% CI]:")
        lines += [f"    {name:<27} {_vs_cover(s)}" for name, s in r["aggregates"].items()]
        b = r["boilerplate"]
        lines.append(
            f"  boilerplate: {b['marked_photos']} photos marked ({b['size_charts_marked']}/{b['size_chart_photos']} "
            f"size charts, {b['product_photos_marked']} product photos); top-5 of {b['chart_queries']} chart listings:"
        )
        for system, shares in b["top5"].items():
            lines.append(
                f"    {system:<25} same product {shares['same_product']:.1%}, "
                f"same seller only {shares['same_seller_other_product']:.1%}"
            )
    return "\n".join(lines)


def _vs_cover(s: dict) -> str:
    rel, ci = s["relative_to_cover"], s["relative_ci95"]
    return "  ".join(
        f"{label} {s[m]:.4f} {rel[m]:+.1%} [{ci[m][0]:+.1%}, {ci[m][1]:+.1%}]"
        for label, m in (("nDCG@5", "ndcg@5"), ("P@1", "precision@1"))
    )
