"""`lookalike demo`: what the project is for, on a generated catalog, in one command (about two minutes).

1. Builds (once, cached under --data) a stand-in catalog with the project's generator (models/catalog.py)
   and serves its photos from 127.0.0.1 on a free port (a plain static file server).
2. Starts fine-tuning the tiny SigLIP on the catalog's photo/title pairs in the background
   (models/finetune.py, sigmoid loss; one CPU thread).
3. Meanwhile exports the same model untrained (random weights: /info and the page say so), starts
   `python -m app` with it over a fresh temporary store and indexes every item by URL (POST /items/batch),
   so the page works at once. FETCH_ALLOW_PRIVATE is set for this service only, to reach the photo server.
4. Exports the fine-tuned model, restarts the service with both files (the new one is added as a
   candidate version), backfills its vectors (POST /models/{v}/backfill), scores both versions offline on
   the held-out listings (models/evaluate.py: nDCG@5, P@1), promotes the fine-tuned one
   (POST /models/{v}/promote) and prints both scores and the page's address: an item's page shows the two
   versions' look-alikes side by side. Then it serves until Ctrl-C.

`--quick` skips the model work: the configured model (the tiny one with random weights when
LOOKALIKE_MODEL_PATH is missing), indexed, served. The models/ tools (the `train` extra) run as child
processes; every child is stopped, and the temporary store removed, whenever and however the demo ends.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.core.settings import SettingsError, load_settings
from app.demo import training
from app.demo.processes import Children, DemoError, Interrupts, say
from app.demo.service import DemoService, items_by_url, photo_server

FINETUNE_STEPS = 150  # on 200 items: nDCG@5 well above the untrained model's, ~1 min of one CPU core


@dataclass(frozen=True)
class Options:
    items: int
    port: int
    data: Path
    quick: bool = False
    steps: int = FINETUNE_STEPS


def run_demo(items: int, port: int, data: Path, *, quick: bool = False, steps: int = FINETUNE_STEPS) -> int:
    """Run until Ctrl-C or SIGTERM (exit 0) or an error (one line, exit 1); never leaves a child behind."""
    options = Options(items, port, data, quick, steps)
    interrupts = Interrupts()
    interrupts.install()
    children = Children(interrupts)
    work: Path | None = None
    error: str | None = None
    try:
        try:
            data.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix="lookalike-demo-"))
            (_quick if quick else _story)(children, options, work)
        except (DemoError, SettingsError, OSError, RuntimeError, ValueError, httpx.HTTPError) as exc:
            error = " ".join(str(exc).split()) or type(exc).__name__
        finally:
            _clean_up(children, work, interrupts)
    except KeyboardInterrupt:  # the one stop signal that interrupts; it may come during the clean-up too
        pass
    finally:
        interrupts.restore()
    if error is not None:
        say(error)
        return 1
    say("stopped")
    return 0


def _clean_up(children: Children, work: Path | None, interrupts: Interrupts) -> None:
    """Stop every child and remove the temporary store; a stop signal during it does not cut it short."""
    while True:
        try:
            if interrupts.requested:
                say("stopping ...")
            children.stop_all()
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
            return
        except KeyboardInterrupt:  # raised at most once: go round again and finish
            continue


def _api_key() -> str | None:
    key = load_settings().api_key
    return key.get_secret_value() if key else None


def _quick(children: Children, options: Options, work: Path) -> None:
    """The configured model (or the tiny one with random weights), indexed, served."""
    configured = load_settings().model_path[0]  # the quick demo serves one model: the first configured
    catalog = training.catalog(children, options.data, options.items)
    model = configured if configured.is_file() else training.random_tiny(children, options.data)
    if model != configured:
        say(f"no model at {configured}: using {model}, RANDOM weights, the look-alikes mean nothing (the page says so)")
    with photo_server(catalog) as photos_url:
        service = DemoService(children, options.port, work / "store", _api_key())
        service.start(model)
        ok, failed = service.index(items_by_url(catalog, photos_url, work / "items.jsonl"))
        say(f"indexed {ok} items ({failed} failed)")
        _print_page(service.url + "/")
        service.serve()


def _story(children: Children, options: Options, work: Path) -> None:
    """Catalog, untrained model indexed, fine-tuned model added, backfilled, scored, promoted, served."""
    catalog = training.catalog(children, options.data, options.items)
    models = options.data / f"models-{catalog.name}"
    models.mkdir(exist_ok=True)
    finetune = training.FineTune(children, catalog, work, models, options.steps)
    finetune.start()
    untrained = training.untrained(children, catalog, work, models)
    with photo_server(catalog) as photos_url:
        service = DemoService(children, options.port, work / "store", _api_key())
        service.start(untrained)
        ok, failed = service.index(items_by_url(catalog, photos_url, work / "items.jsonl"))
        say(f"indexed {ok} items ({failed} failed) with the untrained model; {service.url}/ shows them already")
        finetuned = finetune.finish()
        service.start(untrained, finetuned)
        service.backfill(training.FINETUNED_VERSION)
        versions = {training.UNTRAINED_VERSION: untrained, training.FINETUNED_VERSION: finetuned}
        scores = training.evaluate(children, catalog, versions, work)
        service.backfilled(training.FINETUNED_VERSION)
        service.promote(training.FINETUNED_VERSION)
        _print_scores(scores)
        _print_page(f"{service.url}/?item={training.held_out_item(catalog)}")
        service.serve()


def _print_scores(scores: dict[str, dict[str, Any]]) -> None:
    first = next(iter(scores.values()))
    lines = [
        f"\n  Offline scores on {first['queries']} held-out listings (generated catalog; models.evaluate):",
        f"  {'model version':<24} {'nDCG@5':>8} {'P@1':>8}",
    ]
    lines += [f"  {version:<24} {s['ndcg@5']:>8.3f} {s['precision@1']:>8.3f}" for version, s in scores.items()]
    print("\n".join(lines), flush=True)


def _print_page(url: str) -> None:
    print(f"\n  Open the page: {url}\n  API docs:      {url.split('?')[0]}docs\n  Ctrl-C stops.\n", flush=True)
