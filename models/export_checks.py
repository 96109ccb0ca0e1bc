"""The checks a staged export passes before it is moved into place: the service's own model contract, and
parity of ONNX Runtime with the PyTorch reference on random and photo-like images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from app.core.model_contract import (
    INPUT_NAME,
    OUTPUT_NAME,
    RESAMPLE_FILTERS,
    ModelContractError,
    ModelMetadata,
    read_model_file,
    resize_for_model,
)
from models.export_source import ExportError, Preprocessing
from models.photos import photo_like_images


def check_contract(path: Path, written: ModelMetadata) -> None:
    """The service's own check on the staged file: a model the service would refuse is never written."""
    try:
        found = read_model_file(path)
    except ModelContractError as e:
        raise ExportError(f"the exported model breaks the model contract: {e}") from None
    if found != written:
        raise ExportError(f"the exported model's metadata reads back as {found}, not {written}")


def parity_min_cosine(onnx_path: Path, tower: nn.Module, prep: Preprocessing, *, seed: int = 0) -> float:
    """Min cosine between ONNX Runtime (CPU) and the fp32 PyTorch tower on random and photo-like images.

    The reference normalises pixels outside the graph (numpy for random images, HF SiglipImageProcessor
    for photo-like ones), so the in-graph preprocessing is checked too, not just the exporter.
    """
    try:  # transformers 5 names the Pillow backend explicitly; 4.x's SiglipImageProcessor is Pillow-only
        from transformers import SiglipImageProcessorPil as PilProcessor
    except ImportError:
        from transformers import SiglipImageProcessor as PilProcessor

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    size = prep.image_size
    rng = np.random.default_rng(seed + 1)  # not the images the exporter traced with

    random_pixels = rng.integers(0, 256, (8, size, size, 3), dtype=np.uint8)
    mean, std = np.array(prep.mean), np.array(prep.std)
    random_ref_input = ((random_pixels / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)

    photos = photo_like_images(seed)
    photo_pixels = np.stack([resize_for_model(img, size, prep.resample) for img in photos])
    processor = PilProcessor(
        size={"height": size, "width": size},
        resample=RESAMPLE_FILTERS[prep.resample],
        image_mean=list(prep.mean),
        image_std=list(prep.std),
    )
    photo_ref_input = processor(images=photos, return_tensors="np")["pixel_values"]

    cosines = []
    for pixels, ref_input in ((random_pixels, random_ref_input), (photo_pixels, photo_ref_input)):
        got = session.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0].astype(np.float64)
        with torch.no_grad():
            want = tower(pixel_values=torch.from_numpy(ref_input)).pooler_output.numpy().astype(np.float64)
        cosines.append(_row_cosines(got, want))
    return float(np.concatenate(cosines).min())


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
