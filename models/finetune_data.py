"""Fine-tuning data: (photo, title) pairs from a catalog dir, decoded by the service's own code, in seeded batches.

The image tower sees exactly what the service feeds the exported model: app.ingest.decode.load_pixels (the
service's decode + app.core.model_contract.resize_for_model), then /255 and the processor's mean/std as in the
exported graph. On top, a light random zoom/shift/rotation/flip per image (`augment`).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from app.core.errors import LookalikeError
from app.core.jsonl import read_jsonl
from app.core.settings import Settings
from app.ingest.decode import load_pixels

MAX_PIXELS = int(Settings.model_fields["image_max_pixels"].default)  # the service's own limit


def load_pairs(data: Path, split: str = "train") -> list[tuple[Path, str]]:
    """(photo path, title) pairs of the `split` items (all items when there is no split.json)."""
    items = read_jsonl(data / "items.jsonl")
    split_file = data / "split.json"
    if split_file.exists():
        keep = set(json.loads(split_file.read_text())[split])
        items = [it for it in items if it["item_id"] in keep]
    titles = {it["item_id"]: it["title"] for it in items if it.get("title")}
    photos_file = data / "photos.jsonl"
    if photos_file.exists():
        rows = [(r["item_id"], r["path"]) for r in read_jsonl(photos_file)]
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


def collate(batch: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = torch.from_numpy(np.stack([b[0] for b in batch]))
    return pixels, torch.tensor([b[1] for b in batch])
