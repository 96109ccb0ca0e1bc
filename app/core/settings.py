"""One Settings object, read from LOOKALIKE_* environment variables and validated at start-up."""

from __future__ import annotations

import difflib
import os
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.core.errors import validation_message

ENV_PREFIX = "LOOKALIKE_"

# Batching defaults per encoder device (BATCH_MAX_SIZE / BATCH_MAX_WAIT_MS = auto). On CPU a batch
# of 16 is faster per image than 32 (bench.encoder) and a batch runs for seconds, so waiting 50 ms
# for it to fill costs little; on CUDA batches run in milliseconds, so the wait stays short.
BATCH_DEFAULTS = {"cpu": (16, 50.0), "cuda": (32, 5.0)}


class SettingsError(RuntimeError):
    """Start-up configuration is invalid; the message says which variable and what to do."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    # Model
    # One or more model files, comma-separated: the first serves a new collection, the others are
    # candidates (app/encode/model_set.py); every active version embeds each write.
    model_path: Annotated[list[Path], NoDecode] = [Path("models/siglip.onnx")]
    model_source: str = "google/siglip-base-patch16-224"  # exported to model_path when that one file is missing
    device: Literal["auto", "cuda", "cpu"] = "auto"
    ort_threads: int = Field(0, ge=0, le=256)  # 0 = ONNX Runtime's default (all cores)
    # niceness of the encoder's threads, so reads take the cores first (app/encode/priority.py); 0 = as the process
    encoder_nice: int = Field(19, ge=0, le=19)

    # Store
    qdrant_url: str | None = None  # set = server mode, else embedded Qdrant Edge
    qdrant_api_key: SecretStr | None = None
    qdrant_timeout_s: float = Field(
        5.0,
        gt=0,
        le=120,
        description="How long a request waits for any vector-store call, the embedded store's too (both run in "
        "app/store/guard.py); past it, 503 store_unavailable. In server mode also the Qdrant client's timeout "
        "(whole seconds, at least 1).",
    )
    qdrant_path: Path = Path("data/qdrant")
    # kept bytes of uploaded/base64 items (GET /items/{id}/image, backfills); None = <QDRANT_PATH parent>/images
    image_store_path: Path | None = None
    collection: str = Field("items", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    shard_number: int = Field(1, ge=1, le=1024)  # server mode, new collections only
    replication_factor: int = Field(1, ge=1, le=16)  # server mode, new collections only
    edge_hot_max: int = Field(10_000, ge=100, le=1_000_000)  # embedded: points before an index build
    edge_merge_fanin: int = Field(2, ge=2, le=64)  # embedded: sealed shards merged at once
    # embedded: no merge makes a bigger shard; None = 16 * edge_hot_max (see app/store/qdrant_edge)
    edge_max_shard_points: int | None = Field(None, ge=100, le=100_000_000)
    # embedded, sealed shards (BENCHMARKS.md "Catalogue scale"): an int8 copy of each vector in RAM is searched,
    # the float32 originals stay on disk and re-score oversampling x k candidates; hnsw_ef bounds the graph walk
    edge_bulk_shard_points: int = Field(1_000_000, ge=100, le=100_000_000)  # embedded: points per bulk-built shard
    edge_quantization: Literal["int8", "none"] = "int8"
    edge_vectors_on_disk: bool = True
    edge_hnsw_ef: int = Field(128, ge=4, le=4096)
    edge_oversampling: float = Field(2.0, ge=1.0, le=16.0)
    # embedded: reader processes that search the indexed shards (Qdrant Edge holds the GIL while it searches);
    # None = one per CPU, 0 = search in the serving process
    edge_read_workers: int | None = Field(None, ge=0, le=256)
    store_workers: int = Field(8, ge=1, le=256)  # threads that run store calls (app/store/guard.py)
    store_breaker_cooldown_s: float = Field(1.0, gt=0, le=600)  # after a failure, fail fast this long
    store_close_wait_s: float = Field(5.0, ge=0, le=600)  # embedded: closing waits this long for searches

    # Shutdown (SIGTERM): the steps run one after another; shutdown_budget_s() is their sum.
    shutdown_http_drain_s: float = Field(20.0, ge=0, le=600)  # uvicorn finishes accepted requests
    shutdown_encoder_drain_s: float = Field(5.0, ge=0, le=600)  # the batcher finishes what is queued

    # Batching and admission
    batch_max_size: int | None = Field(None, ge=1, le=1024)  # None ("auto") = per device, see batching()
    batch_max_wait_ms: float | None = Field(None, ge=0, le=1000)  # None ("auto") = per device
    # announced images (admitted, still decoding) hold a batch open at most this long (app/encode/batcher.py)
    batch_max_hold_ms: float = Field(1000.0, ge=0, le=60_000)
    queue_max: int = Field(256, ge=1, le=100_000)
    request_timeout_s: float = Field(30.0, gt=0, le=600)
    # Admission (app/service/admission.py): what writes may hold at once before the encoder; past it, 429.
    # None ("auto") = QUEUE_MAX + the batch size + DECODE_SLOTS: what the queue, one running batch and
    # the decoders hold, so admission refuses before the queue does and the pipeline stays full.
    admission_images: int | None = Field(None, ge=1, le=100_000)
    admission_body_bytes: int = Field(256 * 1024 * 1024, ge=1024, le=64 * 1024**3)  # request bodies in memory
    decode_slots: int | None = Field(None, ge=1, le=256)  # None ("auto") = min(8, cores)
    # a backfill pauses its next image while look-alike reads are in flight (docs/architecture.md "Backfill")
    backfill_yield_to_reads: bool = True

    # Images
    fetch_timeout_s: float = Field(10.0, gt=0, le=120)
    fetch_max_bytes: int = Field(20 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024)
    image_max_pixels: int = Field(40_000_000, ge=1, le=1_000_000_000)
    fetch_allow_private: bool = False
    fetch_max_connections: int = Field(100, ge=1, le=10_000)  # the download pool (app/ingest/fetch.py)
    fetch_max_keepalive: int = Field(20, ge=0, le=10_000)
    fetch_keepalive_expiry_s: float = Field(5.0, ge=0, le=600)
    fetch_max_redirects: int = Field(
        3, ge=0, le=20, description="Redirects an image URL may take; each hop's address is checked again."
    )
    # Listings with several photos (docs/architecture.md "Several photos")
    max_photos: int = Field(12, ge=1, le=100)  # photos per listing; more: 422 too_many_photos
    # A photo on at least this many OTHER listings (near-identical: cosine >= BOILERPLATE_MIN_COSINE) is
    # boilerplate (a size chart, a logo): shown, never used to rank.
    boilerplate_min_listings: int = Field(5, ge=1, le=1000)
    boilerplate_min_cosine: float = Field(0.997, gt=0, le=1)  # calibrated: docs/architecture.md "Several photos"
    decode_draft: bool = True  # JPEG DCT-scaled decode (BENCHMARKS.md "Decode"); false = HF-exact
    request_max_bytes: int = Field(64 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)

    # Experiments (app/experiments): attribution tokens, the event log, definitions applied at start-up
    # Signs attribution tokens; unset = one generated per data dir (replicas must then share that file's value).
    events_secret: SecretStr | None = None
    events_max_age_s: float = Field(86_400.0, gt=0, le=90 * 86_400)  # POST /events refuses older tokens
    experiments_file: Path | None = None  # YAML, applied at start-up (app/experiments/definitions.py)
    events_path: Path | None = None  # None = <QDRANT_PATH parent>/events; a shared volume for several replicas
    replica: str = Field(default_factory=socket.gethostname, pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    # HTTP
    api_key: SecretStr | None = None  # writes need `Authorization: Bearer <key>`; reads stay open
    # model administration and experiment changes need this key when set (the write key is refused there)
    admin_api_key: SecretStr | None = None
    # start on a non-loopback host with no API_KEY (app/core/exposure.py); logged and shown in GET /info
    allow_unauthenticated: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("model_path", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, Path):
            return [value]
        return value

    @field_validator("model_path")
    @classmethod
    def _some_paths(cls, value: list[Path]) -> list[Path]:
        if not value:
            raise ValueError("give at least one model file (comma-separated for several)")
        return value

    def image_store_dir(self) -> Path:
        """Where kept image bytes live: IMAGE_STORE_PATH, else `images` next to QDRANT_PATH."""
        return self.image_store_path if self.image_store_path is not None else self.qdrant_path.parent / "images"

    @field_validator("events_secret")
    @classmethod
    def _secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 16:
            raise ValueError("must be at least 16 bytes (e.g. `openssl rand -hex 32`)")
        return value

    @field_validator("batch_max_size", "batch_max_wait_ms", "admission_images", "decode_slots", mode="before")
    @classmethod
    def _auto_is_none(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return None
        return value

    def batching(self, provider: str) -> tuple[int, float]:
        """(max batch size, max wait ms) for the encoder's active ONNX Runtime provider; set values win."""
        size, wait_ms = BATCH_DEFAULTS["cuda" if provider.startswith("CUDA") else "cpu"]
        return (
            size if self.batch_max_size is None else self.batch_max_size,
            wait_ms if self.batch_max_wait_ms is None else self.batch_max_wait_ms,
        )

    def admitted_images(self, batch_size: int) -> int:
        """Image permits (ADMISSION_IMAGES); auto = QUEUE_MAX + one batch + DECODE_SLOTS."""
        if self.admission_images is not None:
            return self.admission_images
        return self.queue_max + batch_size + self.decode_concurrency()

    def decode_concurrency(self) -> int:
        """Images decoded at once: each may take IMAGE_MAX_PIXELS x 4 bytes (and a copy) while it converts."""
        return self.decode_slots if self.decode_slots is not None else min(8, os.cpu_count() or 2)

    def shutdown_budget_s(self) -> float:
        """Longest time from SIGTERM to exit, step by step (app/__main__.py, app/service/runtime.py):
        HTTP drain, encoder drain, store calls in progress (each bounded by QDRANT_TIMEOUT_S), store close.
        The orchestrator's grace period must cover it plus its own pre-stop delay (tests/integration/test_deploy.py).
        """
        return (
            self.shutdown_http_drain_s + self.shutdown_encoder_drain_s + self.qdrant_timeout_s + self.store_close_wait_s
        )

    def data_dir(self) -> Path:
        """Where the service keeps its own files beside the embedded store (the parent of QDRANT_PATH)."""
        return self.qdrant_path.parent

    def events_root(self) -> Path:
        return self.events_path if self.events_path is not None else self.data_dir() / "events"

    @model_validator(mode="after")
    def _check_store(self) -> Settings:
        if self.qdrant_url is not None and not self.qdrant_url.startswith(("http://", "https://")):
            raise ValueError("qdrant_url must start with http:// or https://")
        if self.admission_body_bytes < self.request_max_bytes:
            raise ValueError("admission_body_bytes must be at least request_max_bytes (else a full body never fits)")
        return self


def _unknown_env_vars() -> list[str]:
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    return sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (plus explicit overrides); unknown or invalid values raise SettingsError."""
    unknown = _unknown_env_vars()
    if unknown:
        known = [ENV_PREFIX + name.upper() for name in Settings.model_fields]
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name}" + (f" (did you mean {close[0]}?)" if close else ""))
        raise SettingsError("unknown setting(s): " + ", ".join(hints) + ". See docs/configuration.md.")
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        message = validation_message(exc.errors(), whole="settings", name=_env_var)
        raise SettingsError("invalid setting(s): " + message) from None


def _env_var(field: str) -> str:
    return ENV_PREFIX + field.upper() if field in Settings.model_fields else field
