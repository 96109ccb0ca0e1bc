"""Where an export starts: the fp32 SigLIP vision tower from a checkpoint (dir or hub id) or seeded random
weights (--config), and the preprocessing facts the exported graph and its metadata carry."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from app.core.model_contract import resample_name

log = logging.getLogger("lookalike.export")


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
    with quiet():
        try:
            config = AutoConfig.from_pretrained(location)
        except (OSError, ValueError) as e:
            raise ExportError(f"could not load checkpoint {checkpoint!r}: {one_line(e)}; {HINT}") from e

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
    with quiet():  # a full checkpoint's text weights are reported as "unexpected": that is the point
        try:
            tower, info = SiglipVisionModel.from_pretrained(
                location, config=vision_config, dtype=torch.float32, output_loading_info=True
            )
        except (OSError, ValueError, RuntimeError) as e:
            raise ExportError(f"could not load checkpoint {checkpoint!r}: {one_line(e)}; {HINT}") from e
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

    with quiet():
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


@contextlib.contextmanager
def quiet() -> Iterator[None]:
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


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()).rstrip(".")
