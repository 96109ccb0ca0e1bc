"""The model contract: what an exported model file is, shared by the exporter (models/) and the service (app/).

A lookalike model is one ONNX file:
* input `pixels`: uint8 [N, H, W, 3] RGB, already resized by `resize_for_model` below; everything after
  the resize (rescale, normalise, transpose) happens inside the graph;
* output `image_embedding`: float32 [N, D], L2-normalised;
* metadata_props `lookalike.*` (ModelMetadata): the model version and the preprocessing facts, so that a
  model and its preprocessing can never disagree.

The resize is the only preprocessing done in Python, and it must match HF SiglipImageProcessor bit for
bit: SigLIP resizes straight to size x size (no aspect-preserving resize, no crop) with Pillow's bicubic
filter, after compositing any transparency on white.

Only Pillow, numpy and json at import time, so the service imports this without torch or transformers;
`read_model_file` loads ONNX Runtime when it is called.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

INPUT_NAME = "pixels"
# Not "embedding": the dynamo exporter clashes with a folded constant of that name.
OUTPUT_NAME = "image_embedding"
# As ONNX Runtime names the element types.
INPUT_TYPE = "tensor(uint8)"
OUTPUT_TYPE = "tensor(float)"

# metadata_props keys (ModelMetadata's fields)
MODEL_VERSION_KEY = "lookalike.model_version"
SOURCE_KEY = "lookalike.source"
IMAGE_SIZE_KEY = "lookalike.image_size"
RESAMPLE_KEY = "lookalike.resample"
MEAN_KEY = "lookalike.mean"
STD_KEY = "lookalike.std"
EMBEDDING_DIM_KEY = "lookalike.embedding_dim"
PRECISION_KEY = "lookalike.precision"

# Names as stored in the model's `lookalike.resample` metadata.
RESAMPLE_FILTERS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


class ModelContractError(ValueError):
    """A model file does not follow the contract; the message names the file, the problem and the fix."""


# --------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class ModelMetadata:
    model_version: str
    source: str
    image_size: int
    resample: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    embedding_dim: int
    precision: str

    @classmethod
    def from_props(cls, props: Mapping[str, str], path: Path | str = "the model") -> ModelMetadata:
        """Parse a model's metadata_props (ORT's custom_metadata_map); ModelContractError when missing or bad.

        source, resample and precision have defaults: models exported before they were recorded lack them.
        """
        try:
            meta = cls(
                model_version=props[MODEL_VERSION_KEY],
                source=props.get(SOURCE_KEY, "unknown"),
                image_size=int(props[IMAGE_SIZE_KEY]),
                resample=props.get(RESAMPLE_KEY, "bicubic"),
                mean=_channels(props[MEAN_KEY], MEAN_KEY),
                std=_channels(props[STD_KEY], STD_KEY),
                embedding_dim=int(props[EMBEDDING_DIM_KEY]),
                precision=props.get(PRECISION_KEY, "fp32"),
            )
            meta._check()
        except (KeyError, ValueError) as exc:
            raise ModelContractError(f"{path} is not a lookalike model (missing or bad metadata {exc})") from None
        return meta

    def to_props(self) -> dict[str, str]:
        """The metadata_props the exporter writes (from_props reads them back equal)."""
        self._check()
        return {
            MODEL_VERSION_KEY: self.model_version,
            SOURCE_KEY: self.source,
            IMAGE_SIZE_KEY: str(self.image_size),
            RESAMPLE_KEY: self.resample,
            MEAN_KEY: json.dumps([float(v) for v in self.mean]),
            STD_KEY: json.dumps([float(v) for v in self.std]),
            EMBEDDING_DIM_KEY: str(self.embedding_dim),
            PRECISION_KEY: self.precision,
        }

    def _check(self) -> None:
        if not self.model_version:
            raise ValueError(f"{MODEL_VERSION_KEY} is empty")
        if self.image_size <= 0 or self.embedding_dim <= 0:
            raise ValueError(f"{IMAGE_SIZE_KEY} and {EMBEDDING_DIM_KEY} must be positive")
        if self.resample not in RESAMPLE_FILTERS:  # else every photo would fail to resize
            raise ValueError(f"{RESAMPLE_KEY} {self.resample!r} is not one of {sorted(RESAMPLE_FILTERS)}")
        if 0.0 in self.std:
            raise ValueError(f"{STD_KEY} has a zero")


def _channels(text: str, key: str) -> tuple[float, ...]:
    values = json.loads(text)
    if (
        not isinstance(values, list)
        or len(values) != 3
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    ):
        raise ValueError(f"{key} {text!r} is not 3 channel values")
    return tuple(float(v) for v in values)


def resample_name(resample: int) -> str:
    """The metadata name of a Pillow filter given as an int (how HF image processors store `resample`)."""
    try:
        name = Image.Resampling(int(resample)).name.lower()
    except (TypeError, ValueError):
        name = ""
    if name not in RESAMPLE_FILTERS:
        raise ValueError(f"resample {resample!r} is not one of the Pillow filters {sorted(RESAMPLE_FILTERS)}")
    return name


# --------------------------------------------------------------------------- model files


class _NodeArg(Protocol):
    name: str
    type: str
    shape: Sequence[int | str | None]


class _ModelMeta(Protocol):
    custom_metadata_map: dict[str, str]


class OrtSession(Protocol):
    """The part of onnxruntime.InferenceSession the check reads (typed here so ORT is not imported)."""

    def get_inputs(self) -> Sequence[_NodeArg]: ...

    def get_outputs(self) -> Sequence[_NodeArg]: ...

    def get_modelmeta(self) -> _ModelMeta: ...


def check_session(session: OrtSession, path: Path | str) -> ModelMetadata:
    """Check a loaded model against the contract (I/O names, types, shapes and metadata); its metadata."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    pixels, embedding = inputs.get(INPUT_NAME), outputs.get(OUTPUT_NAME)
    if pixels is None or pixels.type != INPUT_TYPE or embedding is None or embedding.type != OUTPUT_TYPE:
        found = ", ".join(f"{a.name} {a.type}" for a in [*inputs.values(), *outputs.values()])
        raise _io_error(path, f"found {found}")
    meta = ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map, path)
    size, dim = meta.image_size, meta.embedding_dim
    if not _shape_fits(pixels.shape, (None, size, size, 3)):
        raise _io_error(path, f"`{INPUT_NAME}` has shape {list(pixels.shape)}, metadata says {size}px")
    if not _shape_fits(embedding.shape, (None, dim)):
        raise _io_error(path, f"`{OUTPUT_NAME}` has shape {list(embedding.shape)}, metadata says {dim} dims")
    return meta


def read_model_file(path: Path | str) -> ModelMetadata:
    """Open a model file with ONNX Runtime (CPU, no graph optimisation), check it, return its metadata."""
    import onnxruntime as ort  # here, not at import: the contract stays import-light

    if not Path(path).is_file():
        raise ModelContractError(f"model file {path} does not exist")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
        raise ModelContractError(f"ONNX Runtime could not load {path}: {exc}") from None
    return check_session(session, path)


def _shape_fits(shape: Sequence[int | str | None], want: tuple[int | None, ...]) -> bool:
    """Same rank, and every dimension the model fixes (an int) is the wanted one; None in `want`: any."""
    if len(shape) != len(want):
        return False
    return all(w is None or not isinstance(d, int) or d == w for d, w in zip(shape, want, strict=True))


def _io_error(path: Path | str, problem: str) -> ModelContractError:
    return ModelContractError(
        f"{path} does not follow the model contract (uint8 input `{INPUT_NAME}` [N, H, W, 3], float32 output "
        f"`{OUTPUT_NAME}` [N, D]): {problem}"
    )


# --------------------------------------------------------------------------- the resize


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert to RGB the way HF's convert_to_rgb does: transparency is composited on white.

    A plain convert("RGB") would drop alpha and expose whatever colour the transparent pixels
    happen to store (often black), so a product photo with a transparent background would embed
    differently from the same photo on white.
    """
    has_alpha = "A" in img.getbands() or img.info.get("transparency") is not None
    if not has_alpha:
        return img.convert("RGB")
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def resize_for_model(img: Image.Image, size: int, resample: str = "bicubic") -> np.ndarray:
    """Return the uint8 [size, size, 3] RGB array the model's `pixels` input expects for one image."""
    if resample not in RESAMPLE_FILTERS:
        raise ValueError(f"unknown resample filter {resample!r}; expected one of {sorted(RESAMPLE_FILTERS)}")
    resized = to_rgb(img).resize((size, size), resample=RESAMPLE_FILTERS[resample])
    return np.array(resized, dtype=np.uint8)
