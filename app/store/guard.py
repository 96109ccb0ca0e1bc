"""StoreGuard: every vector-store call runs here, with a bounded wait and a circuit breaker.

Why: a Qdrant server that hangs would otherwise hold a worker thread per request for the client's
timeout, then queue every later request behind those threads (and behind image decodes and DNS
lookups, which share asyncio's default executor). So:
- store calls run on their own small thread pool;
- a caller waits at most `timeout_s`, then gets StoreUnavailable (503 + Retry-After);
- after a failure the breaker opens: calls fail at once for `cooldown_s`, then exactly one trial
  call goes through (the readiness probe is enough to drive it); its success closes the breaker.
  Recovery needs no restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from app.core.errors import StoreUnavailable

T = TypeVar("T")


class StoreGuard:
    def __init__(self, *, timeout_s: float, cooldown_s: float = 1.0, workers: int = 8) -> None:
        self.timeout_s = timeout_s
        self.cooldown_s = cooldown_s
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="store")
        self._open_until: float | None = None  # None: closed (healthy)
        self._trial_running = False
        self._last_error = ""

    def _admit(self) -> bool:
        """May a call go to the store now? Returns whether it is the half-open trial."""
        if self._open_until is None:
            return False
        if time.monotonic() < self._open_until or self._trial_running:
            raise StoreUnavailable(f"the vector store failed recently ({self._last_error}); not retrying yet")
        self._trial_running = True
        return True

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        trial = self._admit()
        try:
            future = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
            try:
                result = await asyncio.wait_for(future, self.timeout_s)
            except TimeoutError:
                # The thread may still be blocked in the client; its late answer is dropped.
                raise StoreUnavailable(f"the vector store did not answer within {self.timeout_s:g} s") from None
        except StoreUnavailable as exc:
            self._last_error = str(exc)[:200]
            self._open_until = time.monotonic() + self.cooldown_s
            raise
        finally:
            if trial:
                self._trial_running = False
        self._open_until = None
        return result

    def close(self) -> None:
        """Wait for calls in progress (a store must not close under a running write), then stop."""
        self._pool.shutdown(wait=True, cancel_futures=True)
