"""OnnxImageEncoder: runs the exported SigLIP image tower with ONNX Runtime.

The model file is self-describing: preprocessing (size, resample, mean/std) and the model version are
read from its metadata_props, and it is checked against app/core/model_contract.py when it loads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from app.core.model_contract import INPUT_NAME, OUTPUT_NAME, ModelContractError, ModelMetadata, check_session

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class EncoderError(RuntimeError):
    """The model cannot be loaded or run as asked; the message says what to do."""


def _providers(device: Literal["auto", "cuda", "cpu"]) -> list[str]:
    if device == "cpu":
        return [CPU]
    if device == "cuda" or CUDA in ort.get_available_providers():
        return [CUDA, CPU]
    return [CPU]


class OnnxImageEncoder:
    """uint8 [N, H, W, 3] RGB (already resized) -> float32 [N, D] L2-normalised embeddings."""

    def __init__(self, path: Path, device: Literal["auto", "cuda", "cpu"] = "auto", threads: int = 0) -> None:
        path = Path(path)
        if not path.is_file():
            raise EncoderError(f"model file {path} does not exist")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        # The encoder shares the cores with HTTP, image decoding and Qdrant: ORT's spinning workers
        # would burn them between kernels (faster for fp32 and int8 on 2 shared cores: BENCHMARKS.md,
        # "Encoder"). CUDA kernels are unaffected.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # onnxruntime-gpu lists the CUDA provider even on machines without a GPU and then falls back
        # to the CPU with an error log; keep ORT quiet and check which provider really became active.
        options.log_severity_level = 3
        if device == "auto":  # a missing CUDA library is expected here, not an error worth a red log line
            ort.set_default_logger_severity(4)
        try:
            self._session = ort.InferenceSession(str(path), options, providers=_providers(device))
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise EncoderError(f"ONNX Runtime could not load {path}: {exc}") from None
        finally:
            ort.set_default_logger_severity(2)
        active = self._session.get_providers()
        self.provider = active[0]
        if device == "cuda" and self.provider != CUDA:
            raise EncoderError(
                "LOOKALIKE_DEVICE=cuda but the CUDA execution provider is not active "
                f"(active: {active}); check the NVIDIA driver, CUDA 12 and cuDNN 9 libraries, "
                "or set LOOKALIKE_DEVICE=auto to fall back to the CPU"
            )
        try:
            self.meta: ModelMetadata = check_session(self._session, path)
        except ModelContractError as exc:
            raise EncoderError(
                f"{exc}; export one with `python -m models.export --checkpoint DIR --out FILE.onnx`"
            ) from None

    @property
    def model_version(self) -> str:
        return self.meta.model_version

    @property
    def image_size(self) -> int:
        return self.meta.image_size

    @property
    def dim(self) -> int:
        return self.meta.embedding_dim

    @property
    def precision(self) -> str:
        return self.meta.precision

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        size = self.image_size
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != (size, size, 3):
            raise ValueError(f"expected uint8 [N, {size}, {size}, 3], got {pixels.dtype} {pixels.shape}")
        (out,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(pixels)})
        return np.asarray(out, dtype=np.float32)

    def warmup(self, batch_sizes: tuple[int, ...] = (1, 2)) -> None:
        """Run once per batch size so the first real request does not pay for allocation and tuning."""
        rng = np.random.default_rng(0)
        for n in batch_sizes:
            self.embed(rng.integers(0, 256, (n, self.image_size, self.image_size, 3), dtype=np.uint8))
