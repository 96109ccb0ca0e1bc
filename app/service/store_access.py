"""The vector store as the service reaches it: every call through the guard, counted; the versions cached."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from app.core import metrics
from app.core.errors import ModelNotFound, StoreUnavailable
from app.core.settings import Settings
from app.store.base import ModelVersion, VectorStore
from app.store.guard import StoreGuard

T = TypeVar("T")

# Another replica's promote or retire reaches this one's cached version list within this long. Not a setting:
# it only bounds how stale a replica's view may be, and a promote or retire re-reads at once on its own replica.
VERSIONS_TTL_S = 2.0


@dataclass(frozen=True)
class Versions:
    """The collection's model versions at one moment: a request reads this once, so it never mixes versions."""

    serving: str
    all: dict[str, ModelVersion]

    @classmethod
    def of(cls, versions: list[ModelVersion]) -> Versions:
        serving = next(v.model_version for v in versions if v.state == "serving")
        return cls(serving, {v.model_version: v for v in versions})

    @property
    def active(self) -> list[str]:
        """Serving first, then the candidates: every write embeds with each."""
        return [self.serving] + [v for v, mv in self.all.items() if mv.state == "candidate"]

    def check_active(self, version: str | None) -> str:
        """The version a read ranks with: the serving one unless named; 404 model_not_found if not active."""
        if version is None:
            return self.serving
        state = self.all[version].state if version in self.all else None
        if state is None or state == "retired":
            known = ", ".join(self.active)
            why = "is retired" if state == "retired" else "is unknown"
            raise ModelNotFound(f"model version {version!r} {why}; active versions: {known}")
        return version


class StoreAccess:
    """Store calls with a bounded wait and a circuit breaker (app/store/guard.py), in the metrics."""

    def __init__(self, settings: Settings, store: VectorStore, versions: list[ModelVersion]) -> None:
        self.store = store
        self._versions = Versions.of(versions)
        self._versions_read = time.monotonic()
        self._guard = StoreGuard(
            timeout_s=settings.qdrant_timeout_s,
            cooldown_s=settings.store_breaker_cooldown_s,
            workers=settings.store_workers,
        )

    def close(self) -> None:
        """Stop the store-call pool after the calls in progress (before the store itself is closed)."""
        self._guard.close()

    @property
    def serving(self) -> str:
        """The serving version (as last read)."""
        return self._versions.serving

    async def versions(self, fresh: bool = False) -> Versions:
        """The collection's versions, re-read from the store when older than VERSIONS_TTL_S (or `fresh`)."""
        if fresh or time.monotonic() - self._versions_read > VERSIONS_TTL_S:
            read = await self.call("versions", self.store.versions)
            self._versions, self._versions_read = Versions.of(read), time.monotonic()
        return self._versions

    async def call(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        """Run one store call through the guard (bounded wait, circuit breaker) and count it in the metrics."""
        started = time.perf_counter()
        try:
            return await self._guard.call(fn, *args)
        except Exception:
            metrics.store_errors.labels(op=op).inc()
            raise
        finally:
            metrics.store_duration.labels(op=op).observe(time.perf_counter() - started)

    async def ready(self) -> bool:
        try:
            await self.call("ready", self._store_ready)
        except StoreUnavailable:
            return False
        return True

    def _store_ready(self) -> None:
        # A store that says "not ready" counts as a failure, so the breaker stays open until it is.
        if not self.store.ready():
            raise StoreUnavailable("the vector store reports not ready")
