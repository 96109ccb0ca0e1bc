"""`python -m app`: run the HTTP service with Settings from the environment."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import signal
import subprocess
import sys

import uvicorn

from app.core import exposure
from app.core.errors import LookalikeError
from app.core.settings import Settings, SettingsError, load_settings
from app.encode.encoder import EncoderError
from app.store.base import CollectionMismatch


class ModelMissing(RuntimeError):
    pass


def model_hint(settings: Settings) -> str:
    path = settings.model_path[0]
    return (
        f"No model file at {path}. Provide one of:\n"
        "  - LOOKALIKE_MODEL_PATH=/path/to/model.onnx (a file made by `python -m models.export`)\n"
        "  - export from a local checkpoint directory:\n"
        "      pip install -e '.[train]'\n"
        f"      python -m models.export --checkpoint /path/to/siglip-checkpoint --out {path}\n"
        "  - with Hugging Face hub access, the same with --checkpoint google/siglip-base-patch16-224\n"
        "  - for a quick local try (random weights, meaningless rankings): "
        f"python -m models.export --config tiny --out {path}"
    )


# What `python -m models.export` needs: the project's training side and the `train` extra.
EXPORT_NEEDS = ("models", "torch", "transformers", "onnx", "onnxscript")


def ensure_model(settings: Settings) -> None:
    """Export LOOKALIKE_MODEL_SOURCE to LOOKALIKE_MODEL_PATH when the file is missing; never a random model.

    Only for a single configured file (a first start): with several files (a model upgrade), every file must
    exist. The export (torch, transformers) runs as `python -m models.export` in a child process, so the
    service never imports the training side; its progress goes to stderr.
    """
    absent = [path for path in settings.model_path if not path.is_file()]
    if not absent:
        return
    if len(settings.model_path) > 1:
        raise ModelMissing(
            "LOOKALIKE_MODEL_PATH names several model files and these do not exist: "
            + ", ".join(str(p) for p in absent)
            + " (only a single model file is exported on first start; export each version with models.export)"
        )
    model_path = settings.model_path[0]
    missing = [name for name in EXPORT_NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelMissing(
            model_hint(settings) + f"\n(the export tools are not installed here: no {', '.join(missing)})"
        )
    print(f"lookalike: no model at {model_path}; exporting {settings.model_source} ...", file=sys.stderr)
    command = [sys.executable, "-m", "models.export", "--checkpoint", settings.model_source]
    command += ["--out", str(model_path)]
    # Its stdout (the export summary) goes to stderr too: stdout is not the service's log.
    with subprocess.Popen(command, stdout=sys.stderr.fileno()) as export:
        # A SIGTERM while exporting (a rollout) stops the export too instead of leaving it orphaned.
        previous = signal.signal(signal.SIGTERM, lambda *_: export.terminate())
        try:
            returncode = export.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
    if returncode != 0 or not model_path.is_file():
        ended = f"exited with {returncode}" if returncode >= 0 else f"was stopped by signal {-returncode}"
        raise ModelMissing(
            f"could not export {settings.model_source} (`python -m models.export` {ended}; its messages are above)"
            "\n\n" + model_hint(settings)
        )


async def serve(settings: Settings) -> None:
    """Start the runtime, then serve HTTP on it; stop serving, then close the runtime.

    The runtime starts before uvicorn does, so a bad model, two files of one version, a mismatched collection or
    a bad experiments file raises here and stops start-up with one clear line, not a lifespan traceback.
    """
    from app.http.app import app_for
    from app.service.runtime import Runtime

    runtime = Runtime(settings)
    async with runtime.running() as services:
        config = uvicorn.Config(
            app_for(runtime, services),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            # the first step of Settings.shutdown_budget_s(): in-flight requests get this long after SIGTERM
            timeout_graceful_shutdown=settings.shutdown_http_drain_s,  # type: ignore[arg-type]
            access_log=settings.log_level == "debug",  # per-request lines cost CPU; /metrics counts them
        )
        # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; with a no-op handler in place, serve()
        # returns and the runtime closes in order: the store is flushed and closed (exit 0, not 143).
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        await uvicorn.Server(config).serve()


def main() -> int:
    try:
        settings = load_settings()
        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
        exposure.check(settings)  # a public address and no LOOKALIKE_API_KEY: one line, exit 2
        ensure_model(settings)
        asyncio.run(serve(settings))
    except (SettingsError, ModelMissing, EncoderError, CollectionMismatch, LookalikeError) as exc:
        print(f"lookalike: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
