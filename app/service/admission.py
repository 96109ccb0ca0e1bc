"""Admission: how much write work the service holds at once before the encoder; past it, 429 at once.

Without it a burst of writes is refused only when the encoder queue is full, that is after every
body has been buffered and every image downloaded and decoded: a burst of large uploads holds them
all in memory first. So every write takes permits at the edge, without waiting, before it holds anything:

- `body_bytes` (app/http/middleware.py): the bytes of a request body, taken before the body is read
  (Content-Length) or chunk by chunk as it streams, given back when the request is answered.
- `images` (app/service/embedding.py): one permit per image, taken before its download or decode and given
  back when its vector comes back from the encoder (or it fails). A batch takes one permit per item,
  in order, and the items for which none is free get their own 429 in the batch's results (the batch's
  other results are per item too), so a batch is admitted item by item, never waiting.

When a budget cannot cover a request, the answer is 429 `overloaded` with Retry-After, straight away:
nothing waits for a permit, so a burst never queues up work the service cannot start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from app.core import metrics
from app.core.errors import Overloaded


class Budget:
    """A counted resource (images, bytes) taken without waiting: all of `n` at once, or nothing.

    Single event loop: try_acquire and release run on the loop thread, so no lock is needed.
    """

    def __init__(self, resource: str, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a budget needs a capacity of at least 1")
        self.resource = resource
        self.capacity = capacity
        self.in_use = 0
        self._gauge = metrics.admission_in_use.labels(resource=resource)
        self._gauge.set(0)
        metrics.admission_capacity.labels(resource=resource).set(capacity)

    @property
    def free(self) -> int:
        return self.capacity - self.in_use

    def try_acquire(self, n: int = 1) -> bool:
        """Take `n` if that many are free (True), else take nothing (False)."""
        if n < 0:
            raise ValueError("cannot acquire a negative amount")
        if n > self.free:
            return False
        self.in_use += n
        self._gauge.set(self.in_use)
        return True

    def release(self, n: int = 1) -> None:
        if n < 0 or n > self.in_use:
            raise ValueError(f"releasing {n} {self.resource} but only {self.in_use} are held")
        self.in_use -= n
        self._gauge.set(self.in_use)

    @contextlib.contextmanager
    def hold(self, n: int = 1) -> Iterator[None]:
        """Take `n` for the block or raise Overloaded at once; given back however the block ends."""
        if not self.try_acquire(n):
            raise overloaded(self)
        try:
            yield
        finally:
            self.release(n)


def overloaded(budget: Budget) -> Overloaded:
    """The 429 for a budget that cannot cover a request (counted with every other overload rejection)."""
    metrics.overload_rejections.inc()
    return Overloaded(
        f"the service is at its admission limit ({budget.capacity} {budget.resource.replace('_', ' ')} "
        "in progress); retry shortly"
    )
