"""Listing-to-listing scores from photo embeddings: the ways of turning photo cosines into one listing score.

Every aggregate takes `ListingPhotos` (each listing's usable photo vectors, padded to the largest listing) and
returns the [L, L] score matrix, row = query listing, column = candidate listing. Photos are rows of an
L2-normalised embedding matrix, so a dot product is a cosine.

* best_pair: max over (query photo i, candidate photo j) of cos(q_i, c_j).
* chamfer: mean over the query's photos i of max_j cos(q_i, c_j) (every query photo looks for its best
  match in the candidate). chamfer_symmetric: the mean of chamfer(q, c) and chamfer(c, q).
* top2_mean: the mean of the two highest pair cosines (the one pair when both listings have one photo).
* mean_vector: the cosine of the two listings' mean photo vectors, each re-normalised (one vector a listing).
* coverNN+X: NN% the covers' cosine + (100-NN)% aggregate X.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class ListingPhotos:
    vecs: np.ndarray  # [L, K, D] each listing's photo vectors, padded with zeros to the largest listing's K
    use: np.ndarray  # [L, K] bool: a real, usable photo (a listing with no usable photo uses all of its own)
    covers: np.ndarray  # [L, D] each listing's cover (first photo), usable or not


def listing_photos(emb: np.ndarray, owner: np.ndarray, usable: np.ndarray) -> ListingPhotos:
    """Group photos by listing (`owner`: listing index per photo, grouped and 0..L-1 in order)."""
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    counts = np.diff(np.r_[starts, len(owner)])
    slot = np.arange(len(owner)) - starts[owner]
    vecs = np.zeros((len(starts), counts.max(), emb.shape[1]), dtype=emb.dtype)
    vecs[owner, slot] = emb
    real = np.zeros(vecs.shape[:2], bool)
    real[owner, slot] = True
    use = np.zeros_like(real)
    use[owner, slot] = usable
    use[~use.any(axis=1)] = real[~use.any(axis=1)]  # only boilerplate photos: those still rank the listing
    return ListingPhotos(vecs=vecs, use=use, covers=emb[starts])


def pair_cosines(p: ListingPhotos) -> np.ndarray:
    """[L, L, K, K] cos(query photo i, candidate photo j); -inf where either photo is padding or left out."""
    sims = np.einsum("aid,bjd->abij", p.vecs, p.vecs)
    valid = p.use[:, None, :, None] & p.use[None, :, None, :]
    return np.where(valid, sims, -np.inf)


def best_pair(p: ListingPhotos) -> np.ndarray:
    return pair_cosines(p).max(axis=(2, 3))


def chamfer(p: ListingPhotos) -> np.ndarray:
    best_match = pair_cosines(p).max(axis=3)  # [L, L, K]: each query photo's best candidate photo
    total = np.where(p.use[:, None, :], best_match, 0.0).sum(axis=2)
    return total / p.use.sum(axis=1)[:, None]


def chamfer_symmetric(p: ListingPhotos) -> np.ndarray:
    one_way = chamfer(p)
    return (one_way + one_way.T) / 2


def top2_mean(p: ListingPhotos) -> np.ndarray:
    sims = pair_cosines(p)
    flat = sims.reshape(*sims.shape[:2], -1)
    top = -np.sort(-flat, axis=2)[:, :, :2]  # [L, L, 2], the second -inf when there is one pair
    return np.where(np.isinf(top[:, :, 1]), top[:, :, 0], top.mean(axis=2))


def mean_vector(p: ListingPhotos) -> np.ndarray:
    means = np.where(p.use[:, :, None], p.vecs, 0.0).sum(axis=1)
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    return means @ means.T


def cover_only(p: ListingPhotos) -> np.ndarray:
    return p.covers @ p.covers.T


def cover_weighted(weight: float, rest: Callable[[ListingPhotos], np.ndarray]) -> Callable[[ListingPhotos], np.ndarray]:
    def score(p: ListingPhotos) -> np.ndarray:
        return weight * cover_only(p) + (1 - weight) * rest(p)

    return score


AGGREGATES: dict[str, Callable[[ListingPhotos], np.ndarray]] = {
    "best_pair": best_pair,
    "chamfer": chamfer,
    "chamfer_symmetric": chamfer_symmetric,
    "top2_mean": top2_mean,
    "mean_vector": mean_vector,
    "cover30+best_pair": cover_weighted(0.3, best_pair),
    "cover50+best_pair": cover_weighted(0.5, best_pair),
    "cover30+chamfer": cover_weighted(0.3, chamfer),
    "cover50+chamfer": cover_weighted(0.5, chamfer),
    "cover30+chamfer_symmetric": cover_weighted(0.3, chamfer_symmetric),
    "cover50+chamfer_symmetric": cover_weighted(0.5, chamfer_symmetric),
    "cover30+mean_vector": cover_weighted(0.3, mean_vector),
    "cover50+mean_vector": cover_weighted(0.5, mean_vector),
}
# all_photos' listing score in models.evaluate --listings: the one the service serves (app/store/photos.py)
DEFAULT_AGGREGATE = "chamfer_symmetric"
