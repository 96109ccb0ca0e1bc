"""ModelSet: every model file of LOOKALIKE_MODEL_PATH, loaded, each with its own micro-batcher.

Each model is self-describing (its `model_version` is in the file), so a set maps versions to encoders. Which of
them serves and which are candidates is the store's business (app/store/base.py `open`, `versions`); the set only
embeds with the versions it is asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.core import metrics
from app.encode.batcher import MicroBatcher
from app.encode.encoder import EncoderError, OnnxImageEncoder
from app.encode.priority import in_lowered_thread, lower_this_thread


@dataclass(frozen=True)
class BatchLimits:
    """What each model's MicroBatcher gets (Settings.batching per the model's provider, and the shared limits)."""

    max_batch_size: int
    max_wait_ms: float
    queue_max: int
    max_hold_ms: float
    drain_s: float


class ModelSet:
    """Encoders by model version, in LOOKALIKE_MODEL_PATH order; one MicroBatcher per model once started."""

    def __init__(
        self, encoders: Sequence[OnnxImageEncoder], paths: Sequence[Path] | None = None, nice: int = 0
    ) -> None:
        """`nice`: the niceness the encoder threads run at (app/encode/priority.py); sessions made by `load`
        already run their pools at it."""
        if not encoders:
            raise EncoderError("no model file given (LOOKALIKE_MODEL_PATH)")
        where = list(paths) if paths is not None else [None] * len(encoders)
        self.encoders: dict[str, OnnxImageEncoder] = {}
        seen: dict[str, Path | None] = {}
        for encoder, path in zip(encoders, where, strict=True):
            version = encoder.model_version
            if version in seen:
                first = seen[version] or "one model"
                raise EncoderError(
                    f"two model files have the same model_version {version!r}: {first} and {path or 'another'}; "
                    "each version needs its own file (export the new model with another --model-version)"
                )
            seen[version] = path
            self.encoders[version] = encoder
        self.batchers: dict[str, MicroBatcher] = {}
        self.nice = nice
        self._shared: ThreadPoolExecutor | None = None  # one encoder thread for every model (CPU), see start()

    @classmethod
    def load(
        cls, paths: Sequence[Path], device: Literal["auto", "cuda", "cpu"], threads: int, nice: int = 0
    ) -> ModelSet:
        """Load every file; with `nice`, each session is made in a thread at that niceness (its pool inherits it)."""
        encoders = in_lowered_thread(lambda: [OnnxImageEncoder(path, device, threads) for path in paths], nice)
        return cls(encoders, paths, nice)

    def dims(self) -> dict[str, int]:
        """{model_version: dim} in file order: what the store's `open` takes."""
        return {version: encoder.dim for version, encoder in self.encoders.items()}

    def get(self, version: str) -> OnnxImageEncoder | None:
        return self.encoders.get(version)

    def warmup(self) -> None:
        for version, encoder in self.encoders.items():
            encoder.warmup()
            metrics.model_info.labels(version=version, provider=encoder.provider, precision=encoder.precision).set(1)

    async def start(self, limits_for: dict[str, BatchLimits]) -> None:
        # On the CPU every model's ONNX Runtime session uses all the cores: two batches at once only fight
        # for them (measured with two base models: BENCHMARKS.md "Model upgrade"), so the models' batches
        # take turns on one encoder thread. GPU sessions keep one thread each (kernels queue on the device).
        on_cpu = all(not e.provider.startswith("CUDA") for e in self.encoders.values())
        if on_cpu and len(self.encoders) > 1:
            self._shared = self.executor()
        for version, encoder in self.encoders.items():
            limits = limits_for[version]
            batcher = MicroBatcher(
                encoder.embed,
                max_batch_size=limits.max_batch_size,
                max_wait_ms=limits.max_wait_ms,
                queue_max=limits.queue_max,
                max_hold_ms=limits.max_hold_ms,
                drain_s=limits.drain_s,
                executor=self._shared,
                thread_init=self._lower,
                version=version,
            )
            await batcher.start()
            self.batchers[version] = batcher

    def executor(self) -> ThreadPoolExecutor:
        """One encoder thread, at the set's niceness."""
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder", initializer=self._lower)

    def _lower(self) -> None:
        lower_this_thread(self.nice)

    async def stop(self) -> None:
        """Each batcher finishes what it has queued, all at once (so the drain stays one SHUTDOWN_ENCODER_DRAIN_S)."""
        await asyncio.gather(*(batcher.stop() for batcher in self.batchers.values()))
        if self._shared is not None:
            self._shared.shutdown(wait=True)
            self._shared = None

    def saturated(self) -> bool:
        return any(batcher.saturated() for batcher in self.batchers.values())
