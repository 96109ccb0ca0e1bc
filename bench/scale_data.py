"""The catalogue bench/scale.py loads: clustered unit vectors with cluster-correlated payloads, and the
exact neighbours it checks the service against.

Product embeddings come in clusters of very different sizes (a few best-selling kinds of item, a long tail)
and spreads, and a cluster's items mostly share a category and a price level. So: about N/150 cluster
centres with heavy-tailed (log-normal) sizes; each item is its centre plus orthogonal noise, at a cosine to
the centre drawn per cluster in [0.45, 0.9] (a little jitter per item); 85% of an item's cluster carry the
cluster's main category; prices are log-normal around a per-cluster level; 5% of the items are sold.

Everything streams in chunks: the vectors go to a memory-mapped .npy (1M x 768 float32 is 3 GB) and the
per-item fields (category, price, seller, sold) to small arrays in `fields.npz`, from which each payload is
made when it is needed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.read_path import CATEGORIES, item_id

CHUNK = 20_000  # rows generated, imported or scanned at once
ITEMS_PER_CLUSTER = 150
MAIN_CATEGORY_SHARE = 0.85
SOLD_SHARE = 0.05
COSINE_RANGE = (0.45, 0.9)  # a cluster's members sit at about this cosine to its centre


@dataclass(frozen=True)
class Fields:
    """The per-item payload fields, as arrays (row i is item_id(i))."""

    category: np.ndarray  # int8 index into CATEGORIES
    price: np.ndarray  # float64
    seller: np.ndarray  # int32
    sold: np.ndarray  # bool

    def save(self, path: Path) -> None:
        np.savez(path, category=self.category, price=self.price, seller=self.seller, sold=self.sold)

    @classmethod
    def load(cls, path: Path) -> Fields:
        with np.load(path) as f:
            return cls(f["category"], f["price"], f["seller"], f["sold"])


def unit_rows(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def generate(n: int, dim: int, seed: int, vectors_path: Path, fields_path: Path) -> None:
    """Write N clustered unit vectors to `vectors_path` (.npy, float32, memory-mapped) and their fields."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    clusters = max(1, n // ITEMS_PER_CLUSTER)
    weights = rng.lognormal(0.0, 1.2, clusters)
    centres = unit_rows(rng.standard_normal((clusters, dim), dtype=np.float32))
    spread = rng.uniform(*COSINE_RANGE, clusters)
    main_category = rng.integers(len(CATEGORIES), size=clusters)
    price_level = rng.lognormal(3.5, 1.0, clusters)
    owner = rng.choice(clusters, size=n, p=weights / weights.sum())

    category = np.where(
        rng.random(n) < MAIN_CATEGORY_SHARE, main_category[owner], rng.integers(len(CATEGORIES), size=n)
    ).astype(np.int8)
    price = np.round(price_level[owner] * rng.lognormal(0.0, 0.3, n), 2).clip(0.01)
    seller = (rng.random(n) * (np.arange(n) // 20 + 1)).astype(np.int32)
    sold = rng.random(n) < SOLD_SHARE
    Fields(category, price, seller, sold).save(fields_path)

    out = np.lib.format.open_memmap(vectors_path, mode="w+", dtype=np.float32, shape=(n, dim))
    with tqdm(total=n, desc="generate vectors", unit="vec", file=sys.stderr) as bar:
        for start in range(0, n, CHUNK):
            rows = owner[start : start + CHUNK]
            centre = centres[rows]
            noise = rng.standard_normal(centre.shape, dtype=np.float32)
            noise -= (noise * centre).sum(1, keepdims=True) * centre  # orthogonal to the centre: exact cosine
            noise = unit_rows(noise)
            cos = np.clip(spread[rows] + rng.normal(0.0, 0.03, len(rows)), 0.3, 0.97).astype(np.float32)[:, None]
            out[start : start + len(rows)] = unit_rows(cos * centre + np.sqrt(1 - cos**2) * noise)
            bar.update(len(rows))
    out.flush()
    del out


def payload(i: int, fields: Fields, model_version: str) -> dict[str, Any]:
    """What the service stores for an item (the fields of bench/read_path.py's payload)."""
    return {
        "item_id": item_id(i),
        "title": f"listing {i}",
        "category": CATEGORIES[int(fields.category[i])],
        "price": float(fields.price[i]),
        "seller_id": f"seller-{int(fields.seller[i])}",
        "status": "sold" if fields.sold[i] else "on_sale",
        "model_version": model_version,
        "indexed_at": 1_795_000_000.0 + i,
    }


def rows(
    vectors: np.ndarray, fields: Fields, model_version: str, count: int
) -> Iterator[tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """(payload, {model_version: vector [1, dim]}) for the first `count` items, read chunk by chunk."""
    for start in range(0, count, CHUNK):
        block = np.array(vectors[start : min(count, start + CHUNK)])  # one chunk in memory at a time
        for j in range(len(block)):
            yield payload(start + j, fields, model_version), {model_version: block[j : j + 1]}


def exact_neighbours(
    vectors: np.ndarray, fields: Fields, queries: np.ndarray, k: int
) -> tuple[list[list[str]], list[list[str]]]:
    """The exact top k of each query item by cosine (brute force, chunked), as GET /similar filters by
    default (no sold items, not the item itself), and the same within the query item's own category."""
    from tqdm import tqdm

    q = np.asarray(vectors[queries], dtype=np.float32)
    own_category = fields.category[queries]
    best = [np.full((len(queries), 0), -np.inf, np.float32), np.full((len(queries), 0), -np.inf, np.float32)]
    best_ids = [np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.int64)]
    n = len(vectors)
    with tqdm(total=n, desc="exact neighbours", unit="vec", file=sys.stderr) as bar:
        for start in range(0, n, CHUNK):
            block = np.asarray(vectors[start : start + CHUNK], dtype=np.float32)
            scores = q @ block.T  # [queries, chunk]
            idx = np.arange(start, start + len(block))
            scores[:, fields.sold[idx]] = -np.inf
            scores[queries[:, None] == idx[None, :]] = -np.inf
            in_category = np.where(fields.category[idx][None, :] == own_category[:, None], scores, -np.inf)
            for slot, s in enumerate((scores, in_category)):
                best[slot], best_ids[slot] = _top(
                    np.concatenate([best[slot], s], axis=1),
                    np.concatenate([best_ids[slot], np.broadcast_to(idx, s.shape)], axis=1),
                    k,
                )
            bar.update(len(block))
    return _names(best[0], best_ids[0]), _names(best[1], best_ids[1])


def _top(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best (score, id) pairs, best first."""
    kk = min(k, scores.shape[1])
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    s, i = np.take_along_axis(scores, part, 1), np.take_along_axis(ids, part, 1)
    order = np.argsort(-s, axis=1, kind="stable")
    return np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)


def _names(scores: np.ndarray, ids: np.ndarray) -> list[list[str]]:
    # -inf: fewer than k items pass the filter
    return [
        [item_id(int(i)) for i, s in zip(r_ids, r_s, strict=True) if np.isfinite(s)]
        for r_ids, r_s in zip(ids, scores, strict=True)
    ]
