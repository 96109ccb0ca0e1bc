"""Backfill: give every item that lacks a model version's vector that vector, while the service keeps serving.

One run works on one VERSION (and optionally one partition I/N of the catalog):

    store.missing(version) pages -> keep this partition's items -> every photo (`image_url` through the guarded
    fetcher, `image_key` from the image store) -> decode -> VERSION's micro-batcher -> store.set_vector (all rows)

Why it is safe to run at any time, and to kill at any time:
- it only ever reads the items still missing the vector, so a rerun (after kill -9, or a second worker)
  resumes where the work stands without any state file, and running it twice changes nothing;
- `set_vector` is conditional on the item's `write_id`: an item deleted meanwhile is never brought back, an
  item replaced meanwhile (a new image, a new write_id, already embedded with every active version) keeps
  its new vectors; both count as outcome "skipped";
- an item whose image can no longer be fetched or decoded is reported (count + the first ids in the status)
  and left as it is: it keeps serving with the versions it has.

Yielding to live traffic: at most one of VERSION's batches of images in flight (`concurrency`, default the
micro-batcher's max batch size, so its batches fill without waiting), and before it starts the next image the
runner waits for live writes and reads to go first (the rule: app/service/backfill_pacing.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from app.core import metrics
from app.core.errors import (
    BackfillRunning,
    ImageNotFound,
    LookalikeError,
    ModelNotFound,
    NotReady,
    Overloaded,
    ValidationError,
)
from app.service.backfill_pacing import BUSY_POLL_S, Pacing
from app.service.items import ItemService
from app.store.images import photo_payloads

log = logging.getLogger("lookalike")

# Not settings: none of these bounds memory, load or what a client sees beyond the status' sample of ids.
FAILED_IDS_MAX = 100  # ids of failed items kept in the status (the counts cover them all)
PAGE_SIZE = 256  # items read per store page; the encoder, not this, sets the pace
RETRY_MAX = 50  # an image refused by a full encoder queue is tried again this many times (BUSY_POLL_S apart)

State = Literal["idle", "running", "done", "failed", "stopped"]  # idle: no run yet (status routes)


@dataclass(frozen=True)
class Partition:
    """Items whose int(sha256(item_id)[:8 hex], 16) % count == index: a stable split of the catalog."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValidationError(f"partition must be I/N with 0 <= I < N, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str | None) -> Partition:
        if text is None or text == "":
            return cls()
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses
        found = re.fullmatch(r"\s*([0-9]{1,9})\s*/\s*([0-9]{1,9})\s*", text)
        if found is None:
            raise ValidationError(f"partition must be I/N (e.g. 0/3), got {text!r}")
        return cls(int(found[1]), int(found[2]))

    def holds(self, item_id: str) -> bool:
        return partition_of(item_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def partition_of(item_id: str, count: int) -> int:
    return int(hashlib.sha256(item_id.encode("utf-8")).hexdigest()[:8], 16) % count


class ItemChanged(Exception):
    """Raised by a LoadImage: the item was deleted or rewritten while its image loaded (its outcome: skipped)."""


class BackfillStore(Protocol):
    """The part of app.store.base.VectorStore a backfill uses."""

    def missing(self, version: str, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]: ...
    def set_vector(self, item_id: str, version: str, vector: np.ndarray, write_id: str | None) -> bool: ...
    def coverage(self, version: str) -> tuple[int, int]: ...


@dataclass
class BackfillStatus:
    version: str
    partition: str
    state: State = "running"
    scanned: int = 0  # items of this partition seen missing the vector
    embedded: int = 0
    skipped: int = 0  # deleted or rewritten meanwhile: nothing to do
    failed: int = 0  # image no longer fetchable or decodable
    failed_ids: list[str] = field(default_factory=list)
    coverage: float = 0.0  # of the whole collection, not only this partition
    missing_at_start: int | None = None  # items of the collection missing the vector when the run started
    error: str | None = None  # why the run failed (state "failed")
    started_at: float | None = field(default_factory=time.time)
    finished_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)  # a copy: failed_ids is not shared with the running backfill


LoadImage = Callable[[dict[str, Any]], Awaitable[bytes]]  # payload -> image bytes (raises LookalikeError)
Embed = Callable[[bytes], Awaitable[np.ndarray]]  # image bytes -> VERSION's vector (decode + micro-batcher)
StoreCall = Callable[..., Awaitable[Any]]  # runs a blocking store method off the event loop


async def _to_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


class Backfill:
    """One run for one version and partition; `run()` returns the final status (also kept in `status`)."""

    def __init__(
        self,
        store: BackfillStore,
        version: str,
        *,
        load_image: LoadImage,
        embed: Embed,
        busy: Callable[[], bool] = lambda: False,
        reads_quiet_s: Callable[[], float] | None = None,
        partition: Partition | None = None,
        concurrency: int = 2,
        page_size: int = PAGE_SIZE,
        store_call: StoreCall = _to_thread,
        on_item: Callable[[BackfillStatus], None] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.store = store
        self.version = version
        self.partition = partition or Partition()
        self.status = BackfillStatus(version=version, partition=str(self.partition))
        self._load_image = load_image
        self._embed = embed
        self._pacing = Pacing(busy, reads_quiet_s)
        self._slots = asyncio.Semaphore(concurrency)
        self._page_size = page_size
        self._store_call = store_call
        self._on_item = on_item
        self._failed: set[str] = set()  # not tried again in this run
        self._counter = {o: metrics.backfill_items.labels(version=version, outcome=o) for o in OUTCOMES}
        self._coverage = metrics.model_coverage.labels(version=version)

    async def run(self) -> BackfillStatus:
        status = self.status
        try:
            await self._update_coverage(first=True)
            cursor: str | None = None
            while True:
                page, cursor = await self._store_call(self.store.missing, self.version, self._page_size, cursor)
                mine = [p for p in page if self.partition.holds(p["item_id"]) and p["item_id"] not in self._failed]
                status.scanned += len(mine)
                async with asyncio.TaskGroup() as tasks:
                    for payload in mine:
                        await self._pacing.wait()
                        await self._slots.acquire()
                        tasks.create_task(self._one(payload))
                await self._update_coverage()
                if cursor is None:
                    break
            status.state = "done"
        except asyncio.CancelledError:
            status.state = "stopped"
            raise
        except Exception as exc:  # the store went away, or a bug: the run stops, the next run resumes
            while isinstance(exc, ExceptionGroup):  # raised by one image task: report the cause
                exc = exc.exceptions[0]
            log.error("backfill of %s failed: %r", self.version, exc)
            status.state = "failed"
            status.error = str(exc) if isinstance(exc, LookalikeError) else f"{type(exc).__name__}: {exc}"
        finally:
            status.finished_at = time.time()
        log.info(
            "backfill of %s (partition %s) %s: %d embedded, %d skipped, %d failed, coverage %.4f",
            self.version,
            status.partition,
            status.state,
            status.embedded,
            status.skipped,
            status.failed,
            status.coverage,
        )
        return status

    async def count_missing(self) -> int:
        """Items of this partition that lack the vector now (a scan of payloads only: for progress bars)."""
        count, cursor = 0, None
        while True:
            page, cursor = await self._store_call(self.store.missing, self.version, self._page_size, cursor)
            count += sum(self.partition.holds(p["item_id"]) for p in page)
            if cursor is None:
                return count

    async def _one(self, payload: dict[str, Any]) -> None:
        item_id = payload["item_id"]
        try:
            try:
                rows = [await self._embed_with_retry(await self._load_image(p)) for p in photo_payloads(payload)]
                vector = rows[0] if len(rows) == 1 else np.stack(rows)
            except ItemChanged:
                self._count("skipped")
                return
            except (Overloaded, NotReady):
                raise  # the service is stopping or drowning: not the item's fault
            except LookalikeError as exc:
                self._fail(item_id, f"{exc.code}: {exc}")
                return
            written = await self._store_call(
                self.store.set_vector, item_id, self.version, vector, payload.get("write_id")
            )
            self._count("embedded" if written else "skipped")
        finally:
            self._slots.release()

    async def _embed_with_retry(self, data: bytes) -> np.ndarray:
        for _ in range(RETRY_MAX):
            try:
                return await self._embed(data)
            except Overloaded:  # a burst of live writes filled the queue since we looked: let it pass
                await asyncio.sleep(BUSY_POLL_S)
        return await self._embed(data)

    def _fail(self, item_id: str, why: str) -> None:
        log.warning("backfill of %s: item %s left as it is: %s", self.version, item_id, why)
        self._failed.add(item_id)
        if len(self.status.failed_ids) < FAILED_IDS_MAX:
            self.status.failed_ids.append(item_id)
        self._count("failed")

    def _count(self, outcome: str) -> None:
        setattr(self.status, outcome, getattr(self.status, outcome) + 1)
        self._counter[outcome].inc()
        if self._on_item is not None:
            self._on_item(self.status)

    async def _update_coverage(self, first: bool = False) -> None:
        having, total = await self._store_call(self.store.coverage, self.version)
        self.status.coverage = having / total if total else 1.0
        self._coverage.set(self.status.coverage)
        if first:
            self.status.missing_at_start = total - having


OUTCOMES = ("embedded", "skipped", "failed")


# ---- wiring to the running service ---------------------------------------------------------------


def service_backfill(
    service: ItemService,
    version: str,
    partition: Partition | None = None,
    *,
    concurrency: int | None = None,
    **kwargs: Any,
) -> Backfill:
    """A Backfill of `version` through the service's own fetcher, image store, decode limits and micro-batcher."""
    encoder = service.models.get(version)
    if encoder is None:
        raise ModelNotFound(f"no model file of version {version!r} is loaded (LOOKALIKE_MODEL_PATH)")
    batcher = service.models.batchers[version]
    serving = service.batcher

    async def load_image(payload: dict[str, Any]) -> bytes:
        if isinstance(payload.get("image_url"), str):
            return await service.fetcher.fetch(payload["image_url"])
        key = payload.get("image_key")
        data = await asyncio.to_thread(service.image_store.get, key) if isinstance(key, str) else None
        if data is None:
            # A delete or replace removes the kept file after its store write: a write that raced this read
            # is not a lost image, and the item needs nothing from the backfill (a replace embeds every version).
            now = await service.store_call("get", service.store.get, payload["item_id"])
            if now is None or now.get("write_id") != payload.get("write_id"):
                raise ItemChanged(payload["item_id"])
            raise ImageNotFound(f"no image is kept for item {payload['item_id']!r}")
        return data

    async def embed(data: bytes) -> np.ndarray:
        # one decode, VERSION's micro-batcher (its batches fill with the backfill's images), nothing stored
        return (await service.embed_versions(data, [version]))[version]

    def busy() -> bool:
        # The backfill's own images sit in VERSION's queue (and in the serving one's when VERSION serves): only
        # admission permits, which the backfill never takes, tell live work apart from it there.
        admission = service.image_permits
        live_queue = serving is not batcher and serving.depth >= serving.max_batch_size
        return admission.in_use * 2 >= admission.capacity or live_queue

    return Backfill(
        service.store,
        version,
        load_image=load_image,
        embed=embed,
        busy=busy,
        reads_quiet_s=service.read_traffic.quiet_s if service.settings.backfill_yield_to_reads else None,
        partition=partition,
        concurrency=concurrency or batcher.max_batch_size,
        # store calls go through the service's guard (timeout, breaker, worker pool) like every route's
        store_call=lambda fn, *args: service.store_call(fn.__name__, fn, *args),
        **kwargs,
    )


class Backfills:
    """The service's background backfills: at most one per version at a time, stopped on shutdown."""

    def __init__(self, service: ItemService) -> None:
        self._service = service
        self._runs: dict[str, tuple[Backfill, asyncio.Task[BackfillStatus]]] = {}
        self._all: set[asyncio.Task[BackfillStatus]] = set()  # every run not finished: stop() waits for each
        self._starting = asyncio.Lock()  # the check and the start are one step: two starts never both run
        self._stopped = False

    async def start(self, version: str, partition: Partition | None = None) -> BackfillStatus:
        """Start a backfill of `version`; BackfillRunning (409, with its status) while one runs."""
        async with self._starting:
            if self._stopped:
                raise NotReady("the service is stopping")
            current = self._runs.get(version)
            if current is not None and not current[1].done():
                running = current[0].status
                raise BackfillRunning(
                    f"a backfill of {version!r} (partition {running.partition}) is running; "
                    "GET /models/{version}/backfill follows it",
                    running.as_dict(),
                )
            await self._check(version)
            backfill = service_backfill(self._service, version, partition)
            task = asyncio.create_task(backfill.run(), name=f"backfill-{version}")
            self._all.add(task)
            task.add_done_callback(self._all.discard)
            self._runs[version] = (backfill, task)
            return backfill.status

    async def status(self, version: str) -> BackfillStatus:
        """The last run's status, or an `idle` one with the version's coverage when none ran."""
        current = self._runs.get(version)
        if current is not None:
            return current[0].status
        await self._check(version)
        store = self._service.store
        having, total = await self._service.store_call("coverage", store.coverage, version)
        return BackfillStatus(
            version=version,
            partition=str(Partition()),
            state="idle",
            coverage=having / total if total else 1.0,
            missing_at_start=None,
            started_at=None,
        )

    async def _check(self, version: str) -> None:
        """404 model_not_found unless the collection has `version` active and a model file of it is loaded."""
        (await self._service.versions(fresh=True)).check_active(version)
        if self._service.models.get(version) is None:
            raise ModelNotFound(f"no model file of version {version!r} is loaded (LOOKALIKE_MODEL_PATH)")

    async def stop(self) -> None:
        """Cancel every run in progress and wait for each (their items in flight are simply not written: a
        rerun resumes). A start after this is refused (503 not_ready)."""
        async with self._starting:  # a start in progress finishes first, and is then cancelled with the rest
            self._stopped = True
        tasks = list(self._all)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
