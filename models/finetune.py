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
import json
from pathlib import Path

from models.finetune_data import PairImages, augment, epoch_batches, load_pairs, match_labels
from models.finetune_loop import LOG_FILE, STATE_FILE, SUMMARY_FILE, sigmoid_loss, train
from models.finetune_setup import DEFAULT_LR, INIT_CONFIGS, Setup, apply_lora, build_setup, save_checkpoint

__all__ = [
    "DEFAULT_LR",
    "INIT_CONFIGS",
    "LOG_FILE",
    "STATE_FILE",
    "SUMMARY_FILE",
    "PairImages",
    "Setup",
    "apply_lora",
    "augment",
    "build_setup",
    "epoch_batches",
    "load_pairs",
    "main",
    "match_labels",
    "parse_args",
    "save_checkpoint",
    "sigmoid_loss",
    "train",
]


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
