"""The demo's model work, each step a models/ tool in a child process: catalog, export, fine-tune, evaluate.

The service side never imports models/ (the `train` extra). Outputs are cached under --data, each written
under a temporary name and renamed when complete (the export does that itself), so an interrupted step
leaves nothing half made that a later run would take for finished.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from app.demo.processes import Children, DemoError, say

CATALOG_SEED = 7
TRAIN_SEED = 0
UNTRAINED_VERSION = "tiny-random-untrained"  # "-random-": /info reports random weights and the page says so
FINETUNED_VERSION = "tiny-finetuned"
PROGRESS_EVERY_S = 10.0
BOOTSTRAP = 200  # resamples for the printed intervals: enough for a demo, quick on a small catalog


def catalog(children: Children, data: Path, items: int) -> Path:
    """The generated stand-in catalog (items, photos, interactions, train/test split), made once per size."""
    out = data / f"catalog-{items}-seed{CATALOG_SEED}"
    if (out / "items.jsonl").is_file() and (out / "manifest.json").is_file():
        return out
    say(f"generating a stand-in catalog of {items} items in {out} (generated data, not a real marketplace)")
    partial = data / f".{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    children.tool("models.catalog", "--out", str(partial), "--items", str(items), "--seed", str(CATALOG_SEED))
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out


def random_tiny(children: Children, data: Path) -> Path:
    """The quick path's model: the export's small test architecture with random weights."""
    tiny = data / "tiny-random.onnx"
    if not tiny.is_file():
        say(f"exporting the tiny model with RANDOM weights to {tiny}")
        children.tool("models.export", "--config", "tiny", "--seed", "0", "--out", str(tiny))
    return tiny


def _export(children: Children, checkpoint: Path, out: Path, version: str) -> Path:
    say(f"exporting {version} to {out}")
    children.tool("models.export", "--checkpoint", str(checkpoint), "--out", str(out), "--model-version", version)
    return out


def _finetune_command(cat: Path, checkpoint: Path, steps: int) -> list[str]:
    return [
        *(sys.executable, "-m", "models.finetune", "--data", str(cat), "--init", "tiny", "--out", str(checkpoint)),
        *("--max-steps", str(steps), "--seed", str(TRAIN_SEED), "--save-every", "0", "--no-progress"),
    ]


def untrained(children: Children, cat: Path, work: Path, models: Path) -> Path:
    """The fine-tune's starting point exported as is: the same init and seed, zero steps."""
    out = models / "untrained.onnx"
    if out.is_file():
        return out
    say("building the untrained tiny SigLIP (random weights: the fine-tune's starting point)")
    checkpoint = work / "untrained"
    children.tool(*_finetune_command(cat, checkpoint, 0)[2:])
    return _export(children, checkpoint, out, UNTRAINED_VERSION)


class FineTune:
    """`models.finetune` on the catalog's photo/title pairs in the background, then its export."""

    def __init__(self, children: Children, cat: Path, work: Path, models: Path, steps: int) -> None:
        self.children, self.cat, self.steps = children, cat, steps
        self.checkpoint = work / "finetuned"
        self.out = models / f"finetuned-{steps}-steps.onnx"
        self.process: subprocess.Popen[Any] | None = None

    def start(self) -> None:
        if self.out.is_file():
            say(f"using the fine-tuned model cached at {self.out} (delete it to fine-tune again)")
            return
        say(f"fine-tuning the tiny model on the catalog's photo/title pairs: {self.steps} steps, sigmoid loss")
        self.process = self.children.start(_finetune_command(self.cat, self.checkpoint, self.steps))

    def finish(self) -> Path:
        """Wait for the fine-tune (a progress line every few seconds), then export it."""
        if self.process is None:
            return self.out
        while True:
            try:
                code = self.process.wait(timeout=PROGRESS_EVERY_S)
                break
            except subprocess.TimeoutExpired:
                say(f"fine-tuning: {self._progress()}")
        self.children.stop(self.process)
        if code != 0:
            raise DemoError(f"`python -m models.finetune` exited with {code} (its messages are above)")
        say(f"fine-tuning: {self._progress()}")
        return _export(self.children, self.checkpoint, self.out, FINETUNED_VERSION)

    def _progress(self) -> str:
        try:  # one line per --log-every steps, flushed as it goes; absent until the first
            last = (self.checkpoint / "train_log.jsonl").read_text(encoding="utf-8").splitlines()[-1]
            record = json.loads(last)
            return f"step {record['step']}/{self.steps}, loss {record['loss_ema']:.3f}"
        except (OSError, IndexError, ValueError, KeyError):
            return f"preparing (loading the photos, step 0/{self.steps})"


def evaluate(children: Children, cat: Path, models: dict[str, Path], work: Path) -> dict[str, dict[str, Any]]:
    """Offline nDCG@5 / P@1 / R@10 of each version on the held-out listings (models.evaluate), by version."""
    say("scoring both versions offline on the held-out listings (models.evaluate) ...")
    out = work / "evaluation.json"
    args = [arg for path in models.values() for arg in ("--model", str(path))]
    options = ("--json", "--no-progress", "--bootstrap", str(BOOTSTRAP))
    children.tool("models.evaluate", "--data", str(cat), *args, *options, output=out)
    result = json.loads(out.read_text(encoding="utf-8"))
    return {version: result[str(path)] for version, path in models.items()}


def held_out_item(cat: Path) -> str:
    """A listing the fine-tune never saw: the page opens on its look-alikes."""
    split = json.loads((cat / "split.json").read_text(encoding="utf-8"))
    return str((split.get("test") or split["train"])[0])  # a tiny catalog may hold nothing out
