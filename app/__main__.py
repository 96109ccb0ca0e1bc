"""`python -m app`: run the HTTP service with Settings from the environment."""

from __future__ import annotations

import importlib.util
import logging
import signal
import subprocess
import sys

import uvicorn

from app.core.errors import StoreUnavailable
from app.core.settings import Settings, SettingsError, load_settings
from app.encode.encoder import EncoderError, OnnxImageEncoder
from app.store.base import CollectionMismatch


class ModelMissing(RuntimeError):
    pass


def model_hint(settings: Settings) -> str:
    return (
        f"No model file at {settings.model_path}. Provide one of:\n"
        "  - LOOKALIKE_MODEL_PATH=/path/to/model.onnx (a file made by `python -m models.export`)\n"
        "  - export from a local checkpoint directory:\n"
        "      pip install -e '.[train]'\n"
        f"      python -m models.export --checkpoint /path/to/siglip-checkpoint --out {settings.model_path}\n"
        "  - with Hugging Face hub access, the same with --checkpoint google/siglip-base-patch16-224\n"
        "  - for a quick local try (random weights, meaningless rankings): "
        f"python -m models.export --config tiny --out {settings.model_path}"
    )


# What `python -m models.export` needs: the project's training side and the `train` extra.
EXPORT_NEEDS = ("models", "torch", "transformers", "onnx", "onnxscript")


def ensure_model(settings: Settings) -> None:
    """Export LOOKALIKE_MODEL_SOURCE to LOOKALIKE_MODEL_PATH when the file is missing; never a random model.

    The export (torch, transformers) runs as `python -m models.export` in a child process, so the
    service never imports the training side; its progress goes to stderr.
    """
    if settings.model_path.is_file():
        return
    missing = [name for name in EXPORT_NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelMissing(
            model_hint(settings) + f"\n(the export tools are not installed here: no {', '.join(missing)})"
        )
    print(f"lookalike: no model at {settings.model_path}; exporting {settings.model_source} ...", file=sys.stderr)
    command = [sys.executable, "-m", "models.export", "--checkpoint", settings.model_source]
    command += ["--out", str(settings.model_path)]
    # Its stdout (the export summary) goes to stderr too: stdout is not the service's log.
    with subprocess.Popen(command, stdout=sys.stderr.fileno()) as export:
        # A SIGTERM while exporting (a rollout) stops the export too instead of leaving it orphaned.
        previous = signal.signal(signal.SIGTERM, lambda *_: export.terminate())
        try:
            returncode = export.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
    if returncode != 0 or not settings.model_path.is_file():
        ended = f"exited with {returncode}" if returncode >= 0 else f"was stopped by signal {-returncode}"
        raise ModelMissing(
            f"could not export {settings.model_source} (`python -m models.export` {ended}; its messages are above)"
            "\n\n" + model_hint(settings)
        )


def main() -> int:
    try:
        settings = load_settings()
        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
        ensure_model(settings)
        from app.http.app import create_app
        from app.service.runtime import make_store

        # Load the model and open the store before serving, so a bad model or a mismatched collection
        # stops start-up with one clear line instead of a lifespan traceback.
        encoder = OnnxImageEncoder(settings.model_path, settings.device, settings.ort_threads)
        store = make_store(settings)
        try:
            store.open({encoder.model_version: encoder.dim})
            # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; with a no-op handler in
            # place, run() returns and the store below is flushed and closed (exit 0, not 143).
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: None)
            uvicorn.run(
                create_app(settings, encoder, store),
                host=settings.host,
                port=settings.port,
                log_level=settings.log_level,
                # the first step of Settings.shutdown_budget_s(): in-flight requests get this long after SIGTERM
                timeout_graceful_shutdown=settings.shutdown_http_drain_s,  # type: ignore[arg-type]
                access_log=settings.log_level == "debug",  # per-request lines cost CPU; /metrics counts them
            )
        finally:
            store.close()
    except (SettingsError, ModelMissing, EncoderError, CollectionMismatch, StoreUnavailable) as exc:
        print(f"lookalike: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
