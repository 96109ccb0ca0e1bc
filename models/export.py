"""Export a SigLIP image encoder to one self-describing ONNX file (the contract: app/core/model_contract.py).

    python -m models.export --checkpoint google/siglip-base-patch16-224 --out model.onnx
    python -m models.export --config tiny --out tiny.onnx --precision int8

The graph takes uint8 [N, H, W, 3] RGB pixels (already resized by model_contract.resize_for_model), does
the rescale/normalise/transpose itself, runs the vision tower, and returns the L2-normalised pooled
embedding `image_embedding` float32 [N, D]. Preprocessing facts go into metadata_props
(model_contract.ModelMetadata) so the service reads them from the model instead of keeping its own copy.
Before the file is moved into place, it is checked against the contract the service applies and a parity
gate compares ONNX Runtime with the PyTorch reference; on failure nothing is written.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxruntime as ort
import torch

from app.core.model_contract import ModelMetadata
from models.export_checks import check_contract, parity_min_cosine
from models.export_graph import PixelsToEmbedding, export_onnx, quantize_int8, write_metadata
from models.export_source import CONFIGS, ExportError, Preprocessing, Source, load_source, log, weights_sha256

__all__ = [
    "CONFIGS",
    "GATES",
    "PRECISIONS",
    "ExportError",
    "ExportReport",
    "PixelsToEmbedding",
    "Preprocessing",
    "Source",
    "export_model",
    "load_source",
    "main",
    "parity_min_cosine",
    "weights_sha256",
]

PRECISIONS = ("fp32", "fp16", "int8")
# Minimum cosine(ONNX, PyTorch fp32 reference) per precision.
GATES: dict[str, float] = {"fp32": 0.99999, "fp16": 0.999, "int8": 0.999}
_TWO_GB = 2 * 1024**3


@dataclass(frozen=True)
class ExportReport:
    path: Path
    model_version: str
    min_cosine: float
    embedding_dim: int
    image_size: int
    precision: str
    source: str
    size_bytes: int


def export_model(
    out: Path,
    *,
    checkpoint: str | None = None,
    config: str | None = None,
    precision: str = "fp32",
    model_version: str | None = None,
    seed: int = 0,
) -> ExportReport:
    """Export, stamp metadata, run the parity gate, then move the file to `out` (nothing written on failure)."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    out = Path(out)
    started = time.monotonic()
    src = load_source(checkpoint=checkpoint, config=config, seed=seed)
    prep = src.preprocessing
    version = model_version or f"{src.name}-{precision}-{src.weights_sha256[:12]}"
    bytes_per_weight = 2 if precision == "fp16" else 4
    if sum(p.numel() for p in src.tower.parameters()) * bytes_per_weight > _TWO_GB:
        raise ExportError("the weights exceed the 2 GB single-file ONNX limit; use --precision fp16")
    facts = (src.source, src.embedding_dim, prep.image_size, src.weights_sha256[:12])
    log.info("source %s: embedding dim %d, image %dpx, weights sha256 %s", *facts)

    out.parent.mkdir(parents=True, exist_ok=True)
    # Work next to `out` so the final move is an atomic rename on the same filesystem.
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        staged = Path(tmp) / out.name
        _write_graph(src, precision, staged)
        metadata = ModelMetadata(
            model_version=version,
            source=src.source,
            image_size=prep.image_size,
            resample=prep.resample,
            mean=prep.mean,
            std=prep.std,
            embedding_dim=src.embedding_dim,
            precision=precision,
        )
        # Applied last, so it also survives quantisation (which rewrites the model).
        write_metadata(staged, metadata.to_props())
        check_contract(staged, metadata)
        min_cosine = _parity_gate(staged, src, precision, seed, out)
        staged.replace(out)

    size = out.stat().st_size
    log.info("wrote %s (%.1f MB) in %.1f s", out, size / 1e6, time.monotonic() - started)
    return ExportReport(
        path=out,
        model_version=version,
        min_cosine=min_cosine,
        embedding_dim=src.embedding_dim,
        image_size=prep.image_size,
        precision=precision,
        source=src.source,
        size_bytes=size,
    )


def _write_graph(src: Source, precision: str, staged: Path) -> None:
    """The ONNX graph of `src` at `precision`, written to `staged` (int8: through an fp32 file beside it)."""
    prep = src.preprocessing
    if precision == "int8":
        fp32_path = staged.with_name("fp32.onnx")
        export_onnx(PixelsToEmbedding(src.tower, prep).eval(), fp32_path, prep.image_size)
        config = src.tower.config
        quantize_int8(fp32_path, staged, config.num_attention_heads, config.hidden_size)
    elif precision == "fp16":
        tower16 = copy.deepcopy(src.tower).half()
        export_onnx(PixelsToEmbedding(tower16, prep, torch.float16).eval(), staged, prep.image_size)
    else:
        export_onnx(PixelsToEmbedding(src.tower, prep).eval(), staged, prep.image_size)


def _parity_gate(staged: Path, src: Source, precision: str, seed: int, out: Path) -> float:
    """The min cosine(ONNX, PyTorch); ExportError below the precision's gate (NaN included)."""
    log.info("checking parity against PyTorch (ONNX Runtime, CPU)")
    min_cosine = parity_min_cosine(staged, src.tower, src.preprocessing, seed=seed)
    gate = GATES[precision]
    if not min_cosine >= gate:  # written this way round so that NaN fails too
        raise ExportError(
            f"parity gate failed: min cosine(ONNX, PyTorch) = {min_cosine:.6f} < {gate} for {precision}; "
            f"{out} was not written. Try --precision fp32 to see whether the exporter or the "
            f"{precision} conversion is at fault (torch {torch.__version__}, onnx {onnx.__version__}, "
            f"onnxruntime {ort.__version__})"
        )
    return min_cosine


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.export",
        description="Export a SigLIP image encoder to one ONNX file (uint8 NHWC pixels -> image_embedding).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="HF SigLIP / SigLIP2 checkpoint directory or hub id")
    source.add_argument("--config", choices=sorted(CONFIGS), help="random seeded weights (tiny: for tests)")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--model-version", help="default: <source>-<precision>-<weights sha256[:12]>")
    parser.add_argument("--seed", type=int, default=0, help="weights seed for --config; parity images")
    args = parser.parse_args(argv)

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    try:
        report = export_model(
            args.out,
            checkpoint=args.checkpoint,
            config=args.config,
            precision=args.precision,
            model_version=args.model_version,
            seed=args.seed,
        )
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"model_version  {report.model_version}")
    print(f"file           {report.path} ({report.size_bytes / 1e6:.1f} MB)")
    print(f"embedding      {report.embedding_dim} dims, input {report.image_size}px uint8, {report.precision}")
    print(f"min cosine     {report.min_cosine:.8f} (gate {GATES[report.precision]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
