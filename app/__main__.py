"""`python -m app`: run the HTTP service with Settings from the environment."""

from __future__ import annotations

import logging
import signal
import sys

import uvicorn

from app.core.settings import Settings, SettingsError, load_settings
from app.encode.encoder import EncoderError, OnnxImageEncoder
from app.store.base import CollectionMismatch, StoreUnavailableError


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


def ensure_model(settings: Settings) -> None:
    """Export LOOKALIKE_MODEL_SOURCE to LOOKALIKE_MODEL_PATH when the file is missing; never a random model."""
    if settings.model_path.is_file():
        return
    try:
        from models.export import export_model
    except ImportError:
        raise ModelMissing(model_hint(settings) + "\n(the export tools are not installed here)") from None
    print(f"lookalike: no model at {settings.model_path}; exporting {settings.model_source} ...", file=sys.stderr)
    try:
        export_model(settings.model_path, checkpoint=settings.model_source)
    except (Exception, SystemExit) as exc:
        raise ModelMissing(f"could not export {settings.model_source}: {exc}\n\n" + model_hint(settings)) from None


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
            store.ensure_collection(encoder.dim, encoder.model_version)
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
    except (SettingsError, ModelMissing, EncoderError, CollectionMismatch, StoreUnavailableError) as exc:
        print(f"lookalike: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
