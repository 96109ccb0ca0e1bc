"""Fine-tuning set-up: the model to train (from scratch or a checkpoint), its tokenizer and processor, LoRA
adapters, and writing OUT as a plain HF checkpoint.

--lora trains low-rank adapters on the q/k/v/out projections of both towers plus t' and b, with everything
else frozen, and merges them into the weights when saving (peft is not a dependency).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import (
    AutoTokenizer,
    PreTrainedTokenizerBase,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
)
from transformers.utils import logging as hf_logging

from models.tokenizer import build_word_tokenizer

TEXT_MAX_LEN = 16  # titles are short attribute phrases; SigLIP pads every text to a fixed length

# Architectures trained from scratch. `tiny` is sized to learn category, colour and pattern of the
# generated catalog within a few hundred CPU steps; `base` is SigLIP-B/16's shape.
INIT_CONFIGS: dict[str, dict] = {
    "tiny": {
        "vision": {
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "image_size": 64,
            "patch_size": 8,
        },
        "text": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4},
    },
    "base": {
        "vision": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "image_size": 224,
            "patch_size": 16,
        },
        "text": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
    },
}
DEFAULT_LR = {"tiny": 2e-3, "base": 3e-4, "checkpoint": 1e-5, "lora": 1e-4}
SIGLIP_MEAN_STD = (0.5, 0.5, 0.5)


# ---------------------------------------------------------------------------------------------------
# LoRA (minimal: the adapters live beside frozen nn.Linear weights and are merged on save)


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))  # zero: starts as the base model
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scale


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def apply_lora(model: SiglipModel, rank: int, alpha: float) -> int:
    """Freeze the model, wrap attention projections with adapters; returns the trainable parameter count."""
    for p in model.parameters():
        p.requires_grad_(False)
    for module in list(model.modules()):
        if isinstance(module, nn.MultiheadAttention):
            continue  # the pooling head's torch MHA reads out_proj.weight directly; a wrapper would be bypassed
        for name in LORA_TARGETS:
            child = getattr(module, name, None)
            if isinstance(child, nn.Linear):
                setattr(module, name, LoRALinear(child, rank, alpha))
    model.logit_scale.requires_grad_(True)
    model.logit_bias.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------------
# Model set-up


@dataclass
class Setup:
    model: SiglipModel
    tokenizer: PreTrainedTokenizerBase
    processor: SiglipImageProcessorPil
    image_size: int
    mean: torch.Tensor
    std: torch.Tensor
    text_len: int
    kind: str  # tiny | base | checkpoint


def build_setup(init: str, titles: list[str], seed: int) -> Setup:
    if init in INIT_CONFIGS:
        shape = INIT_CONFIGS[init]
        tokenizer = build_word_tokenizer(titles, max_length=TEXT_MAX_LEN)
        config = SiglipConfig(
            vision_config=dict(shape["vision"]),
            text_config={
                **shape["text"],
                "vocab_size": len(tokenizer),
                "max_position_embeddings": TEXT_MAX_LEN,
                "pad_token_id": tokenizer.pad_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "bos_token_id": None,
            },
        )
        torch.manual_seed(seed)
        model = SiglipModel(config)
        with torch.no_grad():  # SigLIP's own init (HF's post_init zeroes them): t' = log 10, b = -10
            model.logit_scale.fill_(math.log(10.0))
            model.logit_bias.fill_(-10.0)
        size = shape["vision"]["image_size"]
        processor = SiglipImageProcessorPil(
            size={"height": size, "width": size},
            resample=Image.Resampling.BICUBIC,
            image_mean=list(SIGLIP_MEAN_STD),
            image_std=list(SIGLIP_MEAN_STD),
        )
        text_len, kind = TEXT_MAX_LEN, init
    else:
        model = SiglipModel.from_pretrained(init)
        try:
            tokenizer = AutoTokenizer.from_pretrained(init)
        except (OSError, ValueError) as exc:
            raise SystemExit(
                f"--init {init}: no usable tokenizer there ({exc}); a fine-tune needs the "
                "checkpoint's own tokenizer (install sentencepiece for SigLIP's)"
            ) from None
        processor = SiglipImageProcessorPil.from_pretrained(init)
        size = int(model.config.vision_config.image_size)
        text_len = min(
            int(model.config.text_config.max_position_embeddings), int(getattr(tokenizer, "model_max_length", 64) or 64)
        )
        kind = "checkpoint"
    return Setup(
        model=model,
        tokenizer=tokenizer,
        processor=processor,
        image_size=size,
        mean=torch.tensor(processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1),
        std=torch.tensor(processor.image_std, dtype=torch.float32).view(1, 3, 1, 1),
        text_len=text_len,
        kind=kind,
    )


def save_checkpoint(setup: Setup, out: Path, lora: bool) -> None:
    """Write OUT as a plain HF checkpoint (LoRA adapters merged into a copy of the weights)."""
    model = setup.model
    if lora:
        merged = SiglipModel(model.config)
        merged_state = {}
        for key, value in model.state_dict().items():
            if ".lora_a" in key or ".lora_b" in key:
                continue
            merged_state[key.replace(".base.", ".")] = value
        for name, module in model.named_modules():
            if isinstance(module, LoRALinear):
                delta = (module.lora_b @ module.lora_a * module.scale).detach()
                merged_state[f"{name}.weight"] = merged_state[f"{name}.weight"] + delta.to(module.base.weight.dtype)
        merged.load_state_dict(merged_state)
        model = merged
    out.mkdir(parents=True, exist_ok=True)
    verbosity = hf_logging.get_verbosity()
    # save_pretrained diffs against a default SiglipConfig, whose stock token ids fall outside a small
    # vocabulary and trigger a spurious "bos/eos_token_id" warning; that warning is about the default.
    hf_logging.set_verbosity_error()
    try:
        model.save_pretrained(out)
    finally:
        hf_logging.set_verbosity(verbosity)
    setup.processor.save_pretrained(out)
    setup.tokenizer.save_pretrained(out)
