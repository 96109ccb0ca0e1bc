"""The model-version registry both stores keep with their collection, and the checks they share.

Each version is a named vector of every point: `serving` (exactly one; answers by default), `candidate`
(written by every write, its vectors may still be filling) or `retired` (vector deleted). A version
keeps its vector name for ever; collections written before versions existed keep their unnamed vector
("") for their one version.

Layout: a version added since listings have several photos is a MULTIVECTOR (one row per photo, in the
listing's order, compared with MaxSim); its vector name ends in PHOTOS_SUFFIX, so the layout is known from
the name alone wherever a vector is created (every shard, the builder process, the server). A version from
before keeps its single vector and takes one photo per listing (SinglePhotoVersion for more).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from app.core.errors import ModelNotFound, ModelServing, SinglePhotoVersion
from app.store.base import CollectionMismatch, ModelVersion, PhotoVectors, VersionsChanged, VersionState

PHOTOS_SUFFIX = "~photos"  # "~" is not allowed in a model version name: no version can clash with it


def is_multi(vector_name: str) -> bool:
    """Whether the named vector is a multivector (one row per photo) rather than one vector per listing."""
    return vector_name.endswith(PHOTOS_SUFFIX)


@dataclass(frozen=True)
class StoredVersion:
    """One row of the registry as the store persists it."""

    model_version: str
    state: VersionState
    dim: int
    vector: str  # the named vector holding it ("" = unnamed vector of a collection from before versions)

    @property
    def multi(self) -> bool:
        return is_multi(self.vector)

    @property
    def active(self) -> bool:
        return self.state != "retired"

    def public(self) -> ModelVersion:
        return ModelVersion(self.model_version, self.state, self.dim)

    def to_json(self) -> dict[str, Any]:
        return {"model_version": self.model_version, "state": self.state, "dim": self.dim, "vector": self.vector}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> StoredVersion:
        state = str(row["state"])
        if state not in ("serving", "candidate", "retired"):
            raise ValueError(f"unknown model version state {state!r}")
        return cls(str(row["model_version"]), state, int(row["dim"]), str(row["vector"]))  # type: ignore[arg-type]


def open_versions(
    stored: list[StoredVersion] | None, models: Mapping[str, int], where: str
) -> tuple[list[StoredVersion], list[StoredVersion]]:
    """The registry after opening `where` with the model files `models` ({version: dim}, in order), and
    the versions that are new (their named vector must be created). `stored` None: a new collection.

    Raises CollectionMismatch when an active version has no model file or a known version's dim differs.
    """
    if not models:
        raise CollectionMismatch("no model given: LOOKALIKE_MODEL_PATH names no model file")
    if stored is None:
        rows = [
            StoredVersion(v, "serving" if i == 0 else "candidate", dim, v + PHOTOS_SUFFIX)
            for i, (v, dim) in enumerate(models.items())
        ]
        return rows, rows
    known = {v.model_version: v for v in stored}
    for v in stored:
        if v.active and v.model_version not in models:
            raise CollectionMismatch(
                f"collection {where} needs model version {v.model_version!r} ({v.state}, {v.dim}-d vectors) but "
                "no file in LOOKALIKE_MODEL_PATH provides it. Add its model file (or retire that version first), "
                "or set another LOOKALIKE_COLLECTION and re-index the items"
            )
        if v.model_version in models and models[v.model_version] != v.dim:
            raise CollectionMismatch(
                f"collection {where} holds {v.dim}-d vectors of model version {v.model_version!r}, but its model "
                f"file makes {models[v.model_version]}-d vectors: two different models carry the same version. Fix "
                "LOOKALIKE_MODEL_PATH, or set another LOOKALIKE_COLLECTION and re-index the items"
            )
    names = {v.vector for v in stored}
    added = []
    for version, dim in models.items():
        if version in known:
            continue  # a retired version stays retired: its vectors are gone
        if version + PHOTOS_SUFFIX in names:
            raise CollectionMismatch(f"collection {where}: model version {version!r} clashes with a vector name")
        added.append(StoredVersion(version, "candidate", dim, version + PHOTOS_SUFFIX))
    return [*stored, *added], added


def find(versions: list[StoredVersion], version: str | None) -> StoredVersion:
    """The active version named `version` (None: the serving one); ModelNotFound if unknown or retired."""
    for v in versions:
        if (v.model_version == version if version is not None else v.state == "serving") and v.active:
            return v
    raise ModelNotFound(f"no model version {version!r} in this collection (unknown or retired)")


@contextlib.contextmanager
def retire_raced(still_active: Callable[[], object]) -> Iterator[None]:
    """A search that raced a retire of its version (in this process, or on another replica whose registry
    this one has not re-read yet) fails inside the engine, its vector name being gone. Answer as if the
    retire had come first: `still_active()` raises ModelNotFound (404) when the version is retired now;
    when it is not, the original error stands. (A query item whose vector is gone already reads as
    ModelNotReady: the same check tells "retired" from "not backfilled yet".)"""
    try:
        yield
    except ModelNotFound:
        raise
    except Exception:
        still_active()
        raise


def promoted(versions: list[StoredVersion], version: str) -> list[StoredVersion]:
    """The registry with `version` serving and the old serving version a candidate."""
    target = find(versions, version)
    return [
        replace(v, state="serving") if v is target else (replace(v, state="candidate") if v.state == "serving" else v)
        for v in versions
    ]


def retired(versions: list[StoredVersion], version: str) -> tuple[list[StoredVersion], StoredVersion]:
    """The registry with `version` retired (ModelServing for the serving version), and its row."""
    target = find(versions, version)
    if target.state == "serving":
        raise ModelServing(f"model version {version!r} serves /similar; promote another version first")
    return [replace(v, state="retired") if v is target else v for v in versions], target


def vectors_by_name(
    versions: list[StoredVersion], count: int, vectors: Mapping[str, PhotoVectors] | PhotoVectors
) -> dict[str, list[np.ndarray]]:
    """Check an upsert's vectors -> {vector name: N float32 arrays [photos, dim]}, one per listing.

    Each active version gives either one [count, dim] array (one photo per listing) or `count` arrays of
    [photos, dim] (the listing's photos in order). Convenience: a plain value when exactly one version is
    active. SinglePhotoVersion when a listing with several photos meets a version with a single vector.
    """
    active = [v for v in versions if v.active]
    if not isinstance(vectors, Mapping):
        if len(active) != 1:
            raise ValueError(f"{len(active)} model versions are active: pass one vector array per version")
        vectors = {active[0].model_version: vectors}
    if set(vectors) != {v.model_version for v in active}:
        names = sorted(v.model_version for v in active)
        raise VersionsChanged(f"vectors for {sorted(vectors)} given, but the active versions are {names}")
    out = {}
    for v in active:
        rows = _photo_rows(vectors[v.model_version], count, v)
        if not v.multi and any(len(r) != 1 for r in rows):
            raise SinglePhotoVersion(
                f"model version {v.model_version!r} predates listings with several photos: it keeps one vector per "
                "listing. Write one photo, or add a new model version (a new model file in LOOKALIKE_MODEL_PATH), "
                "backfill and promote it: new versions hold every photo"
            )
        out[v.vector] = rows
    return out


def _photo_rows(given: PhotoVectors, count: int, v: StoredVersion) -> list[np.ndarray]:
    if isinstance(given, np.ndarray) and given.ndim == 2:
        given = [row[None, :] for row in given]
    rows = [np.asarray(r, dtype=np.float32) for r in given]
    if len(rows) != count or any(r.ndim != 2 or r.shape[0] < 1 or r.shape[1] != v.dim for r in rows):
        shapes = [r.shape for r in rows]
        raise ValueError(f"vectors of {v.model_version!r}: {count} arrays (photos, {v.dim}) needed, got {shapes}")
    return rows


def point_vector(vector_name: str, rows: np.ndarray) -> list[Any]:
    """A listing's photo rows [P, dim] as the point stores them under `vector_name`."""
    return rows.tolist() if is_multi(vector_name) else rows[0].tolist()


def photo_rows(stored: Any) -> np.ndarray | None:
    """A stored vector (a multivector, or a single vector from before several photos) as rows [P, dim]."""
    if stored is None:
        return None
    array = np.asarray(stored, dtype=np.float32)
    return array[None, :] if array.ndim == 1 else array


def stored_vector(v: StoredVersion, vector: np.ndarray) -> list[Any]:
    """One listing's photo vectors of `v` ([photos, dim], or [dim] for one photo) checked, as the point keeps them."""
    rows = vectors_by_name([v], 1, {v.model_version: [photo_rows(vector)]})[v.vector][0]
    return point_vector(v.vector, rows)
