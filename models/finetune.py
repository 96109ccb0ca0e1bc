"""Fine-tune a SigLIP model (image + text towers) on listing photo / title pairs with the sigmoid loss.

    python -m models.finetune --data data/catalog --init tiny --out ckpt/tiny --max-steps 300
    python -m models.export --checkpoint ckpt/tiny --out tiny-ft.onnx

--init picks the starting point:
  tiny        a small SigLIP built from scratch (vision: 64 px input, 8 px patches, 4 layers of width 64;
              text: 2 layers) that trains on a CPU in minutes. Its word-level tokenizer is built from
              the training titles (models/tokenizer.py).
  base        the SigLIP-B/16 architecture (224 px, 768-d, 12 layers) from scratch, same tokenizer.
  CHECKPOINT  a local HF SigLIP checkpoint dir or a hub id (e.g. google/siglip-base-patch16-224 where
              the hub is reachable); its own tokenizer and image processor are used.

Data (--data DIR): items.jsonl (item_id, image, title; image paths relative to DIR or absolute), plus
optionally photos.jsonl (item_id, path: extra photos of the same listing, each paired with the
listing's title) and split.json (only the "train" ids are used; held-out products stay unseen).
`python -m models.catalog` writes exactly this.

Training (SigLIP, Zhai et al. 2023): L = -1/|B| sum_ij log sigmoid(z_ij (t x_i.y_j + b)), t = exp(t'),
t' and b learnable and initialised at log 10 and -10. z_ij = +1 when image i and title j belong
together: on the diagonal and, unlike plain SigLIP, also off it when two pairs in a batch have the same
title (two photos of one listing, or two listings both titled "navy striped tote bag"); calling those
negatives would teach the model to separate what the data says is identical. AdamW (no decay on
biases, norms, embeddings, t', b) with linear warm-up then cosine decay; gradient clipping at 1.0.

The image tower sees exactly what the service feeds the exported model: app.ingest.decode.load_pixels (the
service's decode + app.core.model_contract.resize_for_model, the resize shared with export and serving), then
/255 and the processor's mean/std as in the exported graph.
On top, a light random zoom/shift/rotation/flip per image (--no-augment turns it off).

Hardware: on a CUDA device, bf16 autocast (fp16 + loss scaling where bf16 is missing), TF32 matmuls and
a default batch of 256; on a CPU fp32 and a batch of 128 (tiny) or 16 (others); --grad-accum multiplies
the pairs per optimizer step. Seeded: the same command on the same machine gives the same weights.
Every --save-every steps the full training state (weights, optimizer, scheduler, RNGs, step) goes to
OUT/train_state.pt (atomically); --resume continues from it on the same data order, and --stop-after N
ends an invocation early on purpose (time-sliced or preemptible machines). OUT is a valid HF
checkpoint from the start (step 0 = the untrained model) and is rewritten at the end: config.json +
model.safetensors, preprocessor_config.json, tokenizer files; train_log.jsonl and train_summary.json
(loss, t, b, images/s) sit beside them.

--lora trains low-rank adapters (rank --lora-rank) on the q/k/v/out projections of both towers plus
t' and b, with everything else frozen, and merges them into the weights when saving, so the output is
a plain SiglipModel checkpoint the export takes as is. It is implemented here (peft is not a
dependency); it is meant for pretrained checkpoints, on a from-scratch tiny/base it only trains
adapters on random weights.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm
from transformers import (
    AutoTokenizer,
    PreTrainedTokenizerBase,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
    get_cosine_schedule_with_warmup,
)
from transformers.utils import logging as hf_logging

from app.core.errors import LookalikeError
from app.core.model_contract import resample_name
from app.core.settings import Settings
from app.ingest.decode import load_pixels
from models.tokenizer import build_word_tokenizer

STATE_FILE = "train_state.pt"
LOG_FILE = "train_log.jsonl"
SUMMARY_FILE = "train_summary.json"
MAX_PIXELS = int(Settings.model_fields["image_max_pixels"].default)  # the service's own limit
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
# Loss


def sigmoid_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """SigLIP pairwise sigmoid loss over L2-normalised embeddings.

    labels[i, j] = 1 where image i and text j match (default: the identity). Returns
    -1/n * sum_ij log sigmoid(z_ij * (exp(logit_scale) * <x_i, y_j> + logit_bias)), z = 2*labels - 1.
    """
    logits = image_embeds.float() @ text_embeds.float().T * logit_scale.float().exp() + logit_bias.float()
    if labels is None:
        labels = torch.eye(logits.shape[0], device=logits.device)
    signs = 2 * labels.to(logits.dtype) - 1
    return -F.logsigmoid(signs * logits).sum() / logits.shape[0]


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
# Data


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_pairs(data: Path, split: str = "train") -> list[tuple[Path, str]]:
    """(photo path, title) pairs of the `split` items (all items when there is no split.json)."""
    items = _read_jsonl(data / "items.jsonl")
    split_file = data / "split.json"
    if split_file.exists():
        keep = set(json.loads(split_file.read_text())[split])
        items = [it for it in items if it["item_id"] in keep]
    titles = {it["item_id"]: it["title"] for it in items if it.get("title")}
    photos_file = data / "photos.jsonl"
    if photos_file.exists():
        rows = [(r["item_id"], r["path"]) for r in _read_jsonl(photos_file)]
    else:
        rows = [(it["item_id"], it["image"]) for it in items]
    pairs = [
        ((data / path) if not os.path.isabs(path) else Path(path), titles[iid]) for iid, path in rows if iid in titles
    ]
    if not pairs:
        raise SystemExit(f"no {split} image/title pairs found in {data} (need items.jsonl with titles)")
    return pairs


class PairImages(torch.utils.data.Dataset):
    """uint8 [S, S, 3] photo i, decoded and resized by the service's own code; in memory when it fits.

    app.ingest.decode.load_pixels is what the service runs on every photo (content-sniffed decode, EXIF
    orientation, the JPEG draft scale, RGB on white, app.core.model_contract.resize_for_model), so the image
    tower trains on exactly the pixels the exported model will be served.
    """

    def __init__(self, pairs: list[tuple[Path, str]], size: int, resample: str, cache: bool, progress: bool) -> None:
        self.size, self.resample = size, resample
        self.cache: np.ndarray | None = None
        if cache:
            arrays, kept, bad = [], [], []
            for path, title in tqdm(pairs, desc="preprocess", unit="img", disable=not progress):
                try:
                    arrays.append(self._decode(path))
                    kept.append((path, title))
                except (OSError, LookalikeError) as exc:  # one unreadable photo should not end a run
                    bad.append(f"{path}: {exc}")
            if bad:
                print(f"skipped {len(bad)} unreadable photo(s), e.g. {bad[0]}", file=sys.stderr)
            if not kept:
                raise SystemExit("no readable training photo")
            pairs = kept
            self.cache = np.stack(arrays)
        self.paths = [p for p, _ in pairs]
        self.titles = [t for _, t in pairs]

    def _decode(self, path: Path) -> np.ndarray:
        return load_pixels(path.read_bytes(), self.size, MAX_PIXELS, self.resample)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return (self.cache[i] if self.cache is not None else self._decode(self.paths[i])), i


def epoch_batches(n: int, batch: int, seed: int, start: int) -> Iterator[list[int]]:
    """Endless batches of a fresh seeded permutation per epoch, beginning at micro-batch `start`.

    The order depends only on (seed, epoch), so a resumed run sees the batches it would have seen.
    """
    per_epoch = max(1, n // batch)
    epoch, offset = divmod(start, per_epoch)
    while True:
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        for k in range(offset, per_epoch):
            yield perm[k * batch : (k + 1) * batch].tolist()
        epoch, offset = epoch + 1, 0


def augment(pixels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Light label-preserving jitter of a normalised NCHW batch: zoom-in up to 25%, shift, +-10 degrees, flip.

    One affine warp per image (cheap at any size). The model still sees the serving resize; this only
    adds the framing variety that a few photos per listing cannot cover.
    """
    n = pixels.shape[0]
    u = torch.rand(n, 5, generator=gen)
    scale = 1 - 0.25 * u[:, 0]
    angle = (u[:, 1] * 2 - 1) * math.radians(10)
    flip = torch.where(u[:, 2] < 0.5, -1.0, 1.0)
    tx, ty = (u[:, 3] * 2 - 1) * (1 - scale), (u[:, 4] * 2 - 1) * (1 - scale)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(pixels.device, pixels.dtype), list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def match_labels(titles: list[str], texts: list[str]) -> torch.Tensor:
    """labels[i, j] = 1 where pair i's title is text j (every image of a title is a positive for it)."""
    return torch.tensor([[float(t == x) for x in texts] for t in titles])


def _collate(batch: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = torch.from_numpy(np.stack([b[0] for b in batch]))
    return pixels, torch.tensor([b[1] for b in batch])


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


# ---------------------------------------------------------------------------------------------------
# Training


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # Matrices decay; biases, norms, embeddings, the probe and t'/b do not (common ViT practice).
        plain = p.ndim < 2 or "embedding" in name or "probe" in name or name.startswith("logit_")
        (no_decay if plain else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA device")
    return torch.device(name)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(args: argparse.Namespace) -> dict:
    """Run a fine-tune as `args` says; returns the summary also written to OUT/train_summary.json."""
    device = _pick_device(args.device)
    threads = args.threads
    if not threads and device.type == "cpu" and args.init == "tiny":
        # The tiny model's matmuls are too small to split: one thread is as fast on an idle machine and
        # never waits at a barrier for a core that another process holds (BENCHMARKS.md "Fine-tuning").
        threads = 1
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train(args, device)
    finally:
        torch.set_num_threads(before)  # the caller's process (e.g. a test session) keeps its setting


def _train(args: argparse.Namespace, device: torch.device) -> dict:
    on_cuda = device.type == "cuda"
    # A tiny model is cheap enough on a CPU for 128 pairs a step; bigger towers get 16 there.
    batch_size = args.batch_size or (256 if on_cuda else 128 if args.init == "tiny" else 16)
    state_path = args.out / STATE_FILE
    if state_path.exists() and not args.resume:
        raise SystemExit(f"{args.out} holds a training state; pass --resume to continue it or pick a new --out")
    _seed_everything(args.seed)
    if args.no_progress:
        hf_logging.disable_progress_bar()

    pairs = load_pairs(args.data)
    titles = [t for _, t in pairs]

    resuming = args.resume and state_path.exists()
    # A resumed run rebuilds the model from OUT (saved at step 0), so config and tokenizer are identical.
    setup = build_setup(str(args.out) if resuming else args.init, titles, args.seed)
    if resuming:
        setup.kind = json.loads((args.out / "train_args.json").read_text())["kind"]
    lr = args.lr or DEFAULT_LR["lora" if args.lora else setup.kind]
    if not resuming:
        save_checkpoint(setup, args.out, lora=False)  # OUT is a valid (untrained) checkpoint from step 0
        (args.out / LOG_FILE).unlink(missing_ok=True)
        (args.out / "train_args.json").write_text(
            json.dumps(
                {
                    **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                    "kind": setup.kind,
                    "lr": lr,
                    "batch_size": batch_size,
                    "pairs": len(pairs),
                    "titles": len(set(titles)),
                },
                indent=1,
            )
        )
    model = setup.model
    n_trainable = (
        apply_lora(model, args.lora_rank, args.lora_alpha) if args.lora else sum(p.numel() for p in model.parameters())
    )
    model.to(device).train()

    # Enough micro-batches of `batch_size` for the schedule; --max-steps wins over --epochs.
    batch_size = min(batch_size, len(pairs))
    per_epoch = max(1, len(pairs) // (batch_size * args.grad_accum))
    total = args.max_steps if args.max_steps is not None else max(1, round(args.epochs * per_epoch))
    warmup = round(total * args.warmup_frac)
    groups = _param_groups(model, args.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=on_cuda)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, max(total, 1))
    step = 0
    aug_gen = torch.Generator().manual_seed(args.seed)
    if resuming:
        state = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        torch.set_rng_state(state["torch_rng"])
        aug_gen.set_state(state["aug_rng"])

    amp_dtype = None
    if on_cuda and not args.no_amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    cache_bytes = len(pairs) * setup.image_size**2 * 3
    resample = resample_name(setup.processor.resample)
    images = PairImages(
        pairs, setup.image_size, resample, cache=cache_bytes <= args.cache_mb * 2**20, progress=not args.no_progress
    )
    titles = images.titles
    loader = torch.utils.data.DataLoader(
        images,
        batch_sampler=epoch_batches(len(images), batch_size, args.seed, step * args.grad_accum),
        collate_fn=_collate,
        num_workers=0 if images.cache is not None else args.workers,
        pin_memory=on_cuda,
    )
    mean, std = setup.mean.to(device), setup.std.to(device)

    def loss_on(pixels_u8: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        pixels = (pixels_u8.to(device, non_blocking=True).permute(0, 3, 1, 2).float() / 255 - mean) / std
        if not args.no_augment:
            pixels = augment(pixels, aug_gen)
        batch_titles = [titles[i] for i in idx.tolist()]
        texts = sorted(set(batch_titles))  # each distinct title is encoded once
        labels = match_labels(batch_titles, texts).to(device)
        input_ids = setup.tokenizer(
            texts, padding="max_length", truncation=True, max_length=setup.text_len, return_tensors="pt"
        )["input_ids"].to(device)
        autocast = torch.autocast("cuda", dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
        with autocast:
            img = model.vision_model(pixel_values=pixels).pooler_output
            txt = model.text_model(input_ids=input_ids).pooler_output
        img = F.normalize(img.float(), dim=-1)
        txt = F.normalize(txt.float(), dim=-1)
        # Rows are images, columns distinct titles; normalise by the image count as SigLIP does by |B|.
        return sigmoid_loss(img, txt, model.logit_scale, model.logit_bias, labels)

    log = (args.out / LOG_FILE).open("a", encoding="utf-8")
    bar = tqdm(
        total=total,
        initial=step,
        desc="finetune",
        unit="step",
        disable=args.no_progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    batches = iter(loader)
    smooth = None
    started, images_seen = time.perf_counter(), 0
    stop_at = min(total, step + args.stop_after) if args.stop_after else total
    try:
        while step < stop_at:
            optimizer.zero_grad(set_to_none=True)
            loss_sum = 0.0
            for _ in range(args.grad_accum):
                pixels_u8, idx = next(batches)
                loss = loss_on(pixels_u8, idx) / args.grad_accum
                scaler.scale(loss).backward()
                loss_sum += float(loss.detach())
                images_seen += len(idx)
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            smooth = loss_sum if smooth is None else 0.95 * smooth + 0.05 * loss_sum
            t, b = model.logit_scale.exp().item(), model.logit_bias.item()
            bar.set_postfix(loss=f"{smooth:.3f}", t=f"{t:.1f}", b=f"{b:.1f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
            bar.update()
            if step % args.log_every == 0 or step == total:
                log.write(
                    json.dumps(
                        {
                            "step": step,
                            "loss": round(loss_sum, 5),
                            "loss_ema": round(smooth, 5),
                            "t": round(t, 4),
                            "b": round(b, 4),
                            "lr": scheduler.get_last_lr()[0],
                        }
                    )
                    + "\n"
                )
                log.flush()
            if args.save_every and step % args.save_every == 0 and step < stop_at:
                _save_state(state_path, model, optimizer, scheduler, step, aug_gen)
    finally:
        bar.close()
        log.close()
    if on_cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    model.eval()
    model.to("cpu")
    save_checkpoint(setup, args.out, lora=args.lora)
    _save_state(state_path, model, optimizer, scheduler, step, aug_gen)
    summary = {
        "steps": step,
        "total_steps": total,
        "final_loss_ema": smooth,
        "pairs": len(pairs),
        "batch_size": batch_size,
        "grad_accum": args.grad_accum,
        "lr": lr,
        "device": str(device),
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
        "trainable_params": n_trainable,
        "seconds": round(elapsed, 2),
        "images_per_s": round(images_seen / elapsed, 1) if elapsed > 0 and images_seen else None,
        "logit_scale": model.logit_scale.exp().item(),
        "logit_bias": model.logit_bias.item(),
    }
    (args.out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _save_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: object,
    step: int,
    aug_gen: torch.Generator,
) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "torch_rng": torch.get_rng_state(),
            "aug_rng": aug_gen.get_state(),
        },
        tmp,
    )
    os.replace(tmp, path)  # atomic: a crash mid-write never leaves a half-written state


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m models.finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="catalog dir (items.jsonl [+ photos.jsonl, split.json])")
    p.add_argument("--init", required=True, help="tiny | base | HF checkpoint dir or hub id")
    p.add_argument("--out", type=Path, required=True, help="output checkpoint dir")
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides --epochs)")
    p.add_argument("--epochs", type=float, default=10.0)
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="pairs per micro-batch; default 256 on CUDA, on a CPU 128 for tiny and 16 otherwise",
    )
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate; default 2e-3 tiny, 3e-4 base, 1e-5 checkpoint, 1e-4 with --lora",
    )
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-frac", type=float, default=0.1, help="share of steps for linear warm-up")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters on attention projections only")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help=f"continue from OUT/{STATE_FILE}")
    p.add_argument("--save-every", type=int, default=100, help="steps between training-state saves (0: end only)")
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="stop after this many steps of this invocation, saving the state (continue with --resume)",
    )
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--no-augment", action="store_true", help="no random zoom/shift/rotation/flip")
    p.add_argument("--no-amp", action="store_true", help="fp32 on CUDA too")
    p.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: 1 for tiny on a CPU, else torch's default)"
    )
    p.add_argument("--workers", type=int, default=4, help="image loader processes when not cached in memory")
    p.add_argument("--cache-mb", type=int, default=2048, help="keep preprocessed photos in memory up to this size")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.grad_accum < 1 or (args.max_steps is not None and args.max_steps < 0) or args.epochs <= 0:
        p.error("--grad-accum must be >= 1, --max-steps >= 0 and --epochs > 0")
    if not args.data.is_dir():
        p.error(f"--data {args.data} is not a directory")
    return args


def main(argv: list[str] | None = None) -> int:
    summary = train(parse_args(argv))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
