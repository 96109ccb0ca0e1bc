"""The fine-tuning loop: sigmoid loss, AdamW with warm-up + cosine decay, resumable state, log and summary.

Every --save-every steps the full training state (weights, optimizer, scheduler, RNGs, step) goes to
OUT/train_state.pt (atomically); --resume continues from it on the same data order.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup
from transformers.utils import logging as hf_logging

from app.core.model_contract import resample_name
from models.finetune_data import PairImages, augment, collate, epoch_batches, load_pairs, match_labels
from models.finetune_setup import DEFAULT_LR, Setup, apply_lora, build_setup, save_checkpoint

STATE_FILE = "train_state.pt"
LOG_FILE = "train_log.jsonl"
SUMMARY_FILE = "train_summary.json"
ARGS_FILE = "train_args.json"

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]  # (uint8 NHWC pixels, pair indices)


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


@dataclass
class Optimisation:
    """What a step changes and what --resume restores."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    aug_gen: torch.Generator
    step: int = 0


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
    resuming = args.resume and state_path.exists()
    setup, lr = _open_out(args, pairs, batch_size, resuming)
    model = setup.model
    n_trainable = (
        apply_lora(model, args.lora_rank, args.lora_alpha) if args.lora else sum(p.numel() for p in model.parameters())
    )
    model.to(device).train()

    # Enough micro-batches of `batch_size` for the schedule; --max-steps wins over --epochs.
    batch_size = min(batch_size, len(pairs))
    per_epoch = max(1, len(pairs) // (batch_size * args.grad_accum))
    total = args.max_steps if args.max_steps is not None else max(1, round(args.epochs * per_epoch))
    opt = _optimisation(args, model, lr, total, device, state_path if resuming else None)
    images, loader = _data(args, setup, pairs, batch_size, opt.step, on_cuda)
    loss_on = _loss_function(args, setup, images.titles, device, opt)

    started = time.perf_counter()
    smooth, images_seen = _loop(args, model, opt, iter(loader), loss_on, total, state_path)
    if on_cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    model.eval()
    model.to("cpu")
    save_checkpoint(setup, args.out, lora=args.lora)
    _save_state(state_path, model, opt)
    summary = {
        "steps": opt.step,
        "total_steps": total,
        "final_loss_ema": smooth,
        "pairs": len(pairs),
        "batch_size": batch_size,
        "grad_accum": args.grad_accum,
        "lr": lr,
        "device": str(device),
        "amp": str(opt.amp_dtype).replace("torch.", "") if opt.amp_dtype else "fp32",
        "trainable_params": n_trainable,
        "seconds": round(elapsed, 2),
        "images_per_s": round(images_seen / elapsed, 1) if elapsed > 0 and images_seen else None,
        "logit_scale": model.logit_scale.exp().item(),
        "logit_bias": model.logit_bias.item(),
    }
    (args.out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _open_out(
    args: argparse.Namespace, pairs: list[tuple[Path, str]], batch_size: int, resuming: bool
) -> tuple[Setup, float]:
    """The model set-up and the peak learning rate; a new run writes OUT as the untrained checkpoint first."""
    titles = [t for _, t in pairs]
    # A resumed run rebuilds the model from OUT (saved at step 0), so config and tokenizer are identical.
    setup = build_setup(str(args.out) if resuming else args.init, titles, args.seed)
    if resuming:
        setup.kind = json.loads((args.out / ARGS_FILE).read_text())["kind"]
    lr = args.lr or DEFAULT_LR["lora" if args.lora else setup.kind]
    if not resuming:
        save_checkpoint(setup, args.out, lora=False)  # OUT is a valid (untrained) checkpoint from step 0
        (args.out / LOG_FILE).unlink(missing_ok=True)
        arguments = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        about = {"kind": setup.kind, "lr": lr, "batch_size": batch_size, "pairs": len(pairs)}
        (args.out / ARGS_FILE).write_text(json.dumps(arguments | about | {"titles": len(set(titles))}, indent=1))
    return setup, lr


def _optimisation(
    args: argparse.Namespace, model: nn.Module, lr: float, total: int, device: torch.device, resume: Path | None
) -> Optimisation:
    """AdamW + warm-up/cosine schedule (restored from `resume` when given) and the mixed-precision choice."""
    on_cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(
        _param_groups(model, args.weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=on_cuda
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, round(total * args.warmup_frac), max(total, 1))
    aug_gen = torch.Generator().manual_seed(args.seed)
    step = 0
    if resume is not None:
        state = torch.load(resume, map_location=device, weights_only=False)
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
    return Optimisation(optimizer, scheduler, scaler, amp_dtype, aug_gen, step)


def _data(
    args: argparse.Namespace, setup: Setup, pairs: list[tuple[Path, str]], batch_size: int, step: int, on_cuda: bool
) -> tuple[PairImages, torch.utils.data.DataLoader]:
    """The photos (in memory when they fit --cache-mb) and a loader that resumes at `step`'s batch."""
    cache_bytes = len(pairs) * setup.image_size**2 * 3
    resample = resample_name(setup.processor.resample)
    images = PairImages(
        pairs, setup.image_size, resample, cache=cache_bytes <= args.cache_mb * 2**20, progress=not args.no_progress
    )
    loader = torch.utils.data.DataLoader(
        images,
        batch_sampler=epoch_batches(len(images), batch_size, args.seed, step * args.grad_accum),
        collate_fn=collate,
        num_workers=0 if images.cache is not None else args.workers,
        pin_memory=on_cuda,
    )
    return images, loader


def _loss_function(
    args: argparse.Namespace, setup: Setup, titles: list[str], device: torch.device, opt: Optimisation
) -> LossFn:
    model = setup.model
    mean, std = setup.mean.to(device), setup.std.to(device)

    def loss_on(pixels_u8: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        pixels = (pixels_u8.to(device, non_blocking=True).permute(0, 3, 1, 2).float() / 255 - mean) / std
        if not args.no_augment:
            pixels = augment(pixels, opt.aug_gen)
        batch_titles = [titles[i] for i in idx.tolist()]
        texts = sorted(set(batch_titles))  # each distinct title is encoded once
        labels = match_labels(batch_titles, texts).to(device)
        input_ids = setup.tokenizer(
            texts, padding="max_length", truncation=True, max_length=setup.text_len, return_tensors="pt"
        )["input_ids"].to(device)
        autocast = torch.autocast("cuda", dtype=opt.amp_dtype) if opt.amp_dtype else contextlib.nullcontext()
        with autocast:
            img = model.vision_model(pixel_values=pixels).pooler_output
            txt = model.text_model(input_ids=input_ids).pooler_output
        img = F.normalize(img.float(), dim=-1)
        txt = F.normalize(txt.float(), dim=-1)
        # Rows are images, columns distinct titles; normalise by the image count as SigLIP does by |B|.
        return sigmoid_loss(img, txt, model.logit_scale, model.logit_bias, labels)

    return loss_on


def _loop(
    args: argparse.Namespace,
    model: nn.Module,
    opt: Optimisation,
    batches: Batches,
    loss_on: LossFn,
    total: int,
    state_path: Path,
) -> tuple[float | None, int]:
    """Optimizer steps until `total` (or --stop-after); returns the loss EMA and the images seen."""
    log = (args.out / LOG_FILE).open("a", encoding="utf-8")
    bar = tqdm(total=total, initial=opt.step, desc="finetune", unit="step", disable=args.no_progress, file=sys.stderr)
    smooth, images_seen = None, 0
    stop_at = min(total, opt.step + args.stop_after) if args.stop_after else total
    try:
        while opt.step < stop_at:
            loss_sum, seen = _step(args, model, opt, batches, loss_on)
            images_seen += seen
            smooth = loss_sum if smooth is None else 0.95 * smooth + 0.05 * loss_sum
            t, b = model.logit_scale.exp().item(), model.logit_bias.item()
            lr = opt.scheduler.get_last_lr()[0]
            bar.set_postfix(loss=f"{smooth:.3f}", t=f"{t:.1f}", b=f"{b:.1f}", lr=f"{lr:.1e}")
            bar.update()
            if opt.step % args.log_every == 0 or opt.step == total:
                row = {"step": opt.step, "loss": round(loss_sum, 5), "loss_ema": round(smooth, 5)}
                log.write(json.dumps(row | {"t": round(t, 4), "b": round(b, 4), "lr": lr}) + "\n")
                log.flush()
            if args.save_every and opt.step % args.save_every == 0 and opt.step < stop_at:
                _save_state(state_path, model, opt)
    finally:
        bar.close()
        log.close()
    return smooth, images_seen


def _step(
    args: argparse.Namespace,
    model: nn.Module,
    opt: Optimisation,
    batches: Batches,
    loss_on: LossFn,
) -> tuple[float, int]:
    """One optimizer step over --grad-accum micro-batches; returns (loss, images seen)."""
    opt.optimizer.zero_grad(set_to_none=True)
    loss_sum, seen = 0.0, 0
    for _ in range(args.grad_accum):
        pixels_u8, idx = next(batches)
        loss = loss_on(pixels_u8, idx) / args.grad_accum
        opt.scaler.scale(loss).backward()
        loss_sum += float(loss.detach())
        seen += len(idx)
    opt.scaler.unscale_(opt.optimizer)
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.scheduler.step()
    opt.step += 1
    return loss_sum, seen


def _save_state(path: Path, model: nn.Module, opt: Optimisation) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.optimizer.state_dict(),
            "scheduler": opt.scheduler.state_dict(),
            "step": opt.step,
            "torch_rng": torch.get_rng_state(),
            "aug_rng": opt.aug_gen.get_state(),
        },
        tmp,
    )
    os.replace(tmp, path)  # atomic: a crash mid-write never leaves a half-written state
