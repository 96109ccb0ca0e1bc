"""Compare two model versions' look-alike lists on a seeded sample of items (`lookalike models compare V1 V2`).

Per sampled item: overlap@k of the two top-k lists (shared ids / k), and Spearman and Kendall rank correlation on
the union of both lists (an id missing from one list ranks just past its end there). Over the sample: the mean and
quantiles of those, each version's score distribution (quantiles), and the items whose lists changed most.
Items that one version cannot rank yet (no vector of it: 409 model_not_ready) are counted, not compared.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

# item_id, version, k -> [(item_id, score)] best first, or None when the version cannot rank that item
Ranker = Callable[[str, str, int], Awaitable[list[tuple[str, float]] | None]]
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
CHANGED_MOST = 10


@dataclass(frozen=True)
class ItemComparison:
    item_id: str
    overlap: float  # |top-k(v1) & top-k(v2)| / k
    spearman: float | None  # None: fewer than two ranked ids, or no variation to correlate
    kendall: float | None


@dataclass(frozen=True)
class CompareReport:
    v1: str
    v2: str
    k: int
    sampled: int
    compared: int
    not_ranked: int  # sampled items one of the versions could not rank (no vector yet)
    overlap_mean: float | None
    overlap_quantiles: dict[str, float]
    spearman_mean: float | None
    kendall_mean: float | None
    scores_v1: dict[str, float]  # quantiles of every score either list returned
    scores_v2: dict[str, float]
    changed_most: list[ItemComparison]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_lists(item_id: str, a: Sequence[str], b: Sequence[str], k: int) -> ItemComparison:
    overlap = len(set(a[:k]) & set(b[:k])) / k
    union = list(dict.fromkeys([*a, *b]))
    rank_a = {x: i for i, x in enumerate(a)}
    rank_b = {x: i for i, x in enumerate(b)}
    ra = [rank_a.get(x, len(a)) for x in union]
    rb = [rank_b.get(x, len(b)) for x in union]
    return ItemComparison(
        item_id, overlap, _correlation(stats.spearmanr, ra, rb), _correlation(stats.kendalltau, ra, rb)
    )


def _correlation(fn: Callable[..., Any], ra: list[int], rb: list[int]) -> float | None:
    if len(ra) < 2:
        return None
    if ra == rb:
        return 1.0
    if len(set(ra)) < 2 or len(set(rb)) < 2:
        return None
    value = float(fn(ra, rb).statistic)
    return None if math.isnan(value) else value


def _quantiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    q = np.quantile(np.asarray(values, dtype=np.float64), QUANTILES)
    return {f"p{round(p * 100)}": float(v) for p, v in zip(QUANTILES, q, strict=True)}


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def sample_ids(all_ids: Sequence[str], n: int, seed: int) -> list[str]:
    """A seeded sample: the same catalog, n and seed give the same items."""
    ordered = sorted(all_ids)
    return ordered if n >= len(ordered) else random.Random(seed).sample(ordered, n)


async def compare(rank: Ranker, item_ids: Sequence[str], v1: str, v2: str, k: int) -> CompareReport:
    comparisons: list[ItemComparison] = []
    scores: dict[str, list[float]] = {v1: [], v2: []}
    not_ranked = 0
    for item_id in item_ids:
        a, b = await rank(item_id, v1, k), await rank(item_id, v2, k)
        if a is None or b is None:
            not_ranked += 1
            continue
        scores[v1].extend(s for _, s in a)
        scores[v2].extend(s for _, s in b)
        comparisons.append(compare_lists(item_id, [i for i, _ in a], [i for i, _ in b], k))
    overlaps = [c.overlap for c in comparisons]
    return CompareReport(
        v1=v1,
        v2=v2,
        k=k,
        sampled=len(item_ids),
        compared=len(comparisons),
        not_ranked=not_ranked,
        overlap_mean=_mean(overlaps),
        overlap_quantiles=_quantiles(overlaps),
        spearman_mean=_mean([c.spearman for c in comparisons]),
        kendall_mean=_mean([c.kendall for c in comparisons]),
        scores_v1=_quantiles(scores[v1]),
        scores_v2=_quantiles(scores[v2]),
        changed_most=sorted(comparisons, key=lambda c: (c.overlap, c.item_id))[:CHANGED_MOST],
    )


def render(report: CompareReport) -> str:
    """The report as a plain-text table."""

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    def row(label: str, q: dict[str, float]) -> str:
        return f"{label:<22}" + "".join(f"{num(q.get(f'p{round(p * 100)}')):>9}" for p in QUANTILES)

    lines = [
        f"{report.v1} vs {report.v2}: {report.compared} of {report.sampled} sampled items compared at k={report.k}"
        + (f" ({report.not_ranked} not ranked by both)" if report.not_ranked else ""),
        "",
        f"{'':<22}" + "".join(f"{f'p{round(p * 100)}':>9}" for p in QUANTILES),
        row(f"overlap@{report.k}", report.overlap_quantiles),
        row(f"scores {report.v1}"[:22], report.scores_v1),
        row(f"scores {report.v2}"[:22], report.scores_v2),
        "",
        f"mean overlap@{report.k} {num(report.overlap_mean)}   spearman {num(report.spearman_mean)}   "
        f"kendall {num(report.kendall_mean)}",
        "",
        "changed most:",
        f"  {'item_id':<40}{'overlap':>9}{'spearman':>10}{'kendall':>9}",
    ]
    lines += [
        f"  {c.item_id:<40}{num(c.overlap):>9}{num(c.spearman):>10}{num(c.kendall):>9}" for c in report.changed_most
    ]
    return "\n".join(lines)
