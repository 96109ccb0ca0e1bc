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
import contextlib
import copy
import hashlib
import logging
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from app.core.model_contract import (
    INPUT_NAME,
    OUTPUT_NAME,
    RESAMPLE_FILTERS,
    ModelContractError,
    ModelMetadata,
    read_model_file,
    resample_name,
    resize_for_model,
)
from models.attention_fusion import fuse_attention
from models.photos import photo_like_images

log = logging.getLogger("lookalike.export")

PRECISIONS = ("fp32", "fp16", "int8")
# Minimum cosine(ONNX, PyTorch fp32 reference) per precision.
GATES: dict[str, float] = {"fp32": 0.99999, "fp16": 0.999, "int8": 0.999}

# Vision tower sizes for --config (random weights, seeded).
CONFIGS: dict[str, dict[str, int]] = {
    "tiny": dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8
    ),
    "base": dict(  # google/siglip-base-patch16-224
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        image_size=224,
        patch_size=16,
    ),
}
# SiglipImageProcessor defaults, used for --config and for checkpoints without a processor config.
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
SIGLIP_RESAMPLE = "bicubic"

HINT = "pass a local checkpoint directory with --checkpoint DIR or use --config tiny for tests"
_TWO_GB = 2 * 1024**3


class ExportError(Exception):
    """A problem the user can fix (bad checkpoint, unsupported model, failed gate); the message says how."""


@dataclass(frozen=True)
class Preprocessing:
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: str


@dataclass
class Source:
    """A loaded vision tower (fp32, eval mode) and what is needed to describe it."""

    tower: nn.Module
    preprocessing: Preprocessing
    source: str  # checkpoint as given, or "config:<name> seed=<seed>"
    name: str  # short name used in the default model_version
    weights_sha256: str
    embedding_dim: int


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


class PixelsToEmbedding(nn.Module):
    """uint8 NHWC pixels -> L2-normalised pooled embedding, all inside the graph."""

    def __init__(self, tower: nn.Module, prep: Preprocessing, compute_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.tower = tower
        self.compute_dtype = compute_dtype
        self.register_buffer("mean", torch.tensor(prep.mean, dtype=torch.float32).view(1, 1, 1, 3))
        self.register_buffer("std", torch.tensor(prep.std, dtype=torch.float32).view(1, 1, 1, 3))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 even for fp16 towers: it is cheap and keeps the input exact.
        x = pixels.to(torch.float32) * (1.0 / 255.0)
        x = (x - self.mean) / self.std
        x = x.permute(0, 3, 1, 2).to(self.compute_dtype)
        pooled = self.tower(pixel_values=x).pooler_output  # SigLIP's attention-pooling head
        # L2 norm in float32: squaring fp16 activations can overflow.
        return F.normalize(pooled.to(torch.float32), dim=-1)


# --------------------------------------------------------------------------- loading


def load_source(*, checkpoint: str | None = None, config: str | None = None, seed: int = 0) -> Source:
    """Load the fp32 vision tower from a checkpoint (dir or hub id) or build a seeded random one."""
    if (checkpoint is None) == (config is None):
        raise ExportError("give exactly one of checkpoint or config")
    if config is not None:
        return _random_source(config, seed)
    assert checkpoint is not None
    return _checkpoint_source(checkpoint)


def _random_source(config: str, seed: int) -> Source:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    if config not in CONFIGS:
        raise ExportError(f"unknown config {config!r}; expected one of {sorted(CONFIGS)}")
    log.info("building the %s SigLIP vision tower with random weights (seed %d)", config, seed)
    vision_config = SiglipVisionConfig(**CONFIGS[config])
    # fork_rng: seed the weights without changing the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tower = SiglipVisionModel(vision_config).eval()
    prep = Preprocessing(vision_config.image_size, SIGLIP_MEAN, SIGLIP_STD, SIGLIP_RESAMPLE)
    return Source(
        tower=tower,
        preprocessing=prep,
        source=f"config:{config} seed={seed}",
        name=f"siglip-{config}-random",
        weights_sha256=weights_sha256(tower),
        embedding_dim=vision_config.hidden_size,
    )


def _checkpoint_source(checkpoint: str) -> Source:
    from transformers import AutoConfig, SiglipVisionModel

    location = _resolve_checkpoint(checkpoint)
    if not Path(location).is_dir():
        log.info(
            "looking up %s on the Hugging Face hub (without network access this retries for about 30 s) ...", checkpoint
        )
    with _quiet():
        try:
            config = AutoConfig.from_pretrained(location)
        except (OSError, ValueError) as e:
            raise ExportError(f"could not load checkpoint {checkpoint!r}: {_one_line(e)}; {HINT}") from e

    if config.model_type == "siglip":  # a full SiglipModel (SigLIP, fixed-resolution SigLIP2)
        vision_config = config.vision_config
    elif config.model_type == "siglip_vision_model":
        vision_config = config
    elif config.model_type.startswith("siglip2"):
        raise ExportError(
            f"{checkpoint!r} is a SigLIP2 NaFlex checkpoint (model_type={config.model_type}); it takes "
            "variable-size patch sequences, not fixed-size images. Use a fixed-resolution SigLIP2 "
            "checkpoint such as google/siglip2-base-patch16-224, or a SigLIP one."
        )
    else:
        raise ExportError(f"{checkpoint!r} is not a SigLIP checkpoint (model_type={config.model_type}); {HINT}")
    if not getattr(vision_config, "vision_use_head", True):
        raise ExportError(
            f"{checkpoint!r} has no attention-pooling head (vision_use_head=False); lookalike embeds the "
            "pooled output of that head"
        )

    log.info("loading vision tower from %s", checkpoint)
    with _quiet():  # a full checkpoint's text weights are reported as "unexpected": that is the point
        try:
            tower, info = SiglipVisionModel.from_pretrained(
                location, config=vision_config, dtype=torch.float32, output_loading_info=True
            )
        except (OSError, ValueError, RuntimeError) as e:
            raise ExportError(f"could not load checkpoint {checkpoint!r}: {_one_line(e)}; {HINT}") from e
    missing = sorted(info.get("missing_keys", ())) + sorted(str(k) for k in info.get("mismatched_keys", ()))
    if missing:
        raise ExportError(
            f"checkpoint {checkpoint!r} lacks vision weights (they would be random): {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}"
        )
    tower.eval()
    return Source(
        tower=tower,
        preprocessing=_read_preprocessing(location, vision_config.image_size),
        source=checkpoint,
        name=Path(checkpoint.rstrip("/")).name or "checkpoint",
        weights_sha256=weights_sha256(tower),
        embedding_dim=vision_config.hidden_size,
    )


def _resolve_checkpoint(checkpoint: str) -> str:
    """A local directory, or a hub id; a path that does not exist fails here, before any hub retries."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise ExportError(f"could not load checkpoint {checkpoint!r}: it is a file, not a directory; {HINT}")
    # Hub ids are "name" or "org/name"; anything else is a path the user expected to exist.
    if checkpoint.startswith(("/", ".", "~")) or checkpoint.count("/") > 1 or "\\" in checkpoint:
        raise ExportError(f"could not load checkpoint {checkpoint!r}: no such directory; {HINT}")
    return checkpoint


def _read_preprocessing(location: str, image_size: int) -> Preprocessing:
    """mean/std/size/resample from the checkpoint's image processor config, checked against the model."""
    from transformers import AutoImageProcessor

    with _quiet():
        try:
            processor = AutoImageProcessor.from_pretrained(location)
        except (OSError, ValueError):
            processor = None
    if processor is None:
        log.warning("no image processor config in %s; using SigLIP defaults (mean/std 0.5, bicubic)", location)
        return Preprocessing(image_size, SIGLIP_MEAN, SIGLIP_STD, SIGLIP_RESAMPLE)

    size = processor.size
    height = size.get("height") if isinstance(size, dict) else getattr(size, "height", None)
    width = size.get("width") if isinstance(size, dict) else getattr(size, "width", None)
    problems = []
    if (height, width) != (image_size, image_size):
        problems.append(f"size {height}x{width} is not {image_size}x{image_size}")
    if getattr(processor, "do_center_crop", False):
        problems.append("it center-crops")
    if not np.isclose(getattr(processor, "rescale_factor", 1 / 255), 1 / 255):
        problems.append(f"rescale_factor is {processor.rescale_factor}, not 1/255")
    try:
        resample = resample_name(processor.resample)
    except ValueError as e:
        problems.append(str(e))
    if problems:
        raise ExportError(
            f"the image processor in {location} does not fit the model contract (square resize to the "
            f"model's {image_size}px, rescale 1/255, normalise): {'; '.join(problems)}"
        )
    mean, std = _triple(processor.image_mean), _triple(processor.image_std)
    return Preprocessing(image_size, mean, std, resample)


def _triple(value: float | Sequence[float]) -> tuple[float, float, float]:
    values = [float(value)] * 3 if isinstance(value, int | float) else [float(v) for v in value]
    if len(values) != 3:
        raise ExportError(f"expected 3 channel values for mean/std, got {values}")
    return values[0], values[1], values[2]


def weights_sha256(module: nn.Module) -> str:
    """Hash of names, dtypes, shapes and bytes of the weights: stable for the same weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy() if t.numel() else b"")
    return digest.hexdigest()


# --------------------------------------------------------------------------- export


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
    log.info(
        "source %s: embedding dim %d, image %dpx, weights sha256 %s",
        src.source,
        src.embedding_dim,
        prep.image_size,
        src.weights_sha256[:12],
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    # Work next to `out` so the final move is an atomic rename on the same filesystem.
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        staged = Path(tmp) / out.name
        if precision == "int8":
            fp32_path = Path(tmp) / "fp32.onnx"
            _export_onnx(PixelsToEmbedding(src.tower, prep).eval(), fp32_path, prep.image_size)
            config = src.tower.config
            _quantize_int8(fp32_path, staged, config.num_attention_heads, config.hidden_size)
        elif precision == "fp16":
            tower16 = copy.deepcopy(src.tower).half()
            _export_onnx(PixelsToEmbedding(tower16, prep, torch.float16).eval(), staged, prep.image_size)
        else:
            _export_onnx(PixelsToEmbedding(src.tower, prep).eval(), staged, prep.image_size)

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
        _write_metadata(staged, metadata.to_props())
        _check_contract(staged, metadata)

        log.info("checking parity against PyTorch (ONNX Runtime, CPU)")
        min_cosine = parity_min_cosine(staged, src.tower, prep, seed=seed)
        gate = GATES[precision]
        if not min_cosine >= gate:  # written this way round so that NaN fails too
            raise ExportError(
                f"parity gate failed: min cosine(ONNX, PyTorch) = {min_cosine:.6f} < {gate} for {precision}; "
                f"{out} was not written. Try --precision fp32 to see whether the exporter or the "
                f"{precision} conversion is at fault (torch {torch.__version__}, onnx {onnx.__version__}, "
                f"onnxruntime {ort.__version__})"
            )
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


def _export_onnx(wrapper: nn.Module, path: Path, image_size: int) -> None:
    log.info("exporting to ONNX (torch.onnx dynamo exporter) ...")
    started = time.monotonic()
    # Batch of 2: a batch-1 example would pin N=1 in the dynamo exporter.
    example = torch.randint(0, 256, (2, image_size, image_size, 3), dtype=torch.uint8)
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    assert program is not None
    onnx.save_model(program.model_proto, str(path))
    log.info("exported in %.1f s", time.monotonic() - started)


def _quantize_int8(fp32_path: Path, out: Path, num_heads: int, hidden_size: int) -> None:
    """fp32 ONNX -> fused attention -> constant folding -> dynamic int8 (MatMul/Gemm weights, per channel).

    Measured on SigLIP-B/16, side by side (BENCHMARKS.md "Encoder"): fusing attention into ORT's
    MultiHeadAttention kernel and constant-folding the pooling head's split in-projection (so its
    weights are initializers and get quantised too) makes int8 faster at the same cosine. The fp32
    graph gains nothing from the same fusion, so fp32 stays plain ONNX. QUInt8 weights are much slower
    (no U8U8 VNNI path), per-tensor weights and quantising the attention's activation x activation
    MatMuls gain nothing, QAttention (packed QKV, 7-bit weights) is no faster than MultiHeadAttention,
    and onnxruntime.transformers' optimizer (vit/clip) fuses no attention in this exporter's graph
    (only LayerNorm and BiasGelu).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    log.info("quantising weights to int8 (fused attention, dynamic, MatMul/Gemm, per channel) ...")
    started = time.monotonic()
    model = onnx.load_model(str(fp32_path))
    fused = fuse_attention(model, num_heads, hidden_size // num_heads)
    if fused == 0:  # still correct (the gate decides), only slower: say so rather than fail
        log.warning("no attention block matched the fusion pattern; quantising the unfused graph")
    fused_path, folded_path = fp32_path.with_name("fused.onnx"), fp32_path.with_name("folded.onnx")
    onnx.save_model(model, str(fused_path))
    with _quiet():
        # ORT's basic graph optimisations (constant folding) on the CPU; symbolic shape inference
        # cannot follow the exporter's dynamic Expand, and nothing here needs it.
        quant_pre_process(str(fused_path), str(folded_path), skip_symbolic_shape=True)
        quantize_dynamic(
            folded_path,
            out,
            weight_type=QuantType.QInt8,  # U8S8: the VNNI / AVX-512 kernels
            per_channel=True,
            op_types_to_quantize=["MatMul", "Gemm"],
        )
    log.info("quantised in %.1f s (%d attention blocks fused)", time.monotonic() - started, fused)


def _write_metadata(path: Path, metadata: dict[str, str]) -> None:
    model = onnx.load_model(str(path))
    props = {p.key: p.value for p in model.metadata_props} | metadata
    onnx.helper.set_model_props(model, props)
    model.producer_name = "lookalike.models.export"
    onnx.save_model(model, str(path))


def _check_contract(path: Path, written: ModelMetadata) -> None:
    """The service's own check on the staged file: a model the service would refuse is never written."""
    try:
        found = read_model_file(path)
    except ModelContractError as e:
        raise ExportError(f"the exported model breaks the model contract: {e}") from None
    if found != written:
        raise ExportError(f"the exported model's metadata reads back as {found}, not {written}")


# --------------------------------------------------------------------------- parity


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


# --------------------------------------------------------------------------- helpers and CLI


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide exporter/loader chatter (torchvision-missing notices, deprecations, load reports) for a step.

    Real failures still arrive as exceptions; only log records below ERROR and warnings are muted.
    """
    # "" = root: the ORT quantiser logs there.
    names = ["torch.onnx", "onnxscript", "onnx_ir", "transformers", "huggingface_hub", ""]
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()).rstrip(".")


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
