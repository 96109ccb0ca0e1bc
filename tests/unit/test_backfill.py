"""The backfill runner's bookkeeping without a model: partitions, outcomes, failures, concurrency, yielding (to
live writes and to reads).

The store here is a small in-memory stand-in with the store contract's missing / set_vector / coverage semantics
(conditional on write_id, never creating a point); the real stores run the same paths in
tests/integration/test_backfill.py.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import numpy as np
import pytest

from app.core.errors import ImageFetchFailed, StoreUnavailable, ValidationError
from app.service import backfill_pacing
from app.service.backfill import Backfill, ItemChanged, Partition, partition_of
from app.service.reads import ReadTraffic


class MemoryStore:
    def __init__(self, items: int) -> None:
        self.payloads: dict[str, dict[str, Any]] = {}
        self.vectors: dict[str, dict[str, np.ndarray]] = {}
        for i in range(items):
            self.write(f"item-{i:03d}", f"w{i}")

    def write(self, item_id: str, write_id: str, versions: tuple[str, ...] = ("v1",)) -> None:
        self.payloads[item_id] = {"item_id": item_id, "write_id": write_id, "image_url": f"http://img/{item_id}"}
        self.vectors[item_id] = {v: np.ones(4, np.float32) for v in versions}

    def delete(self, item_id: str) -> None:
        del self.payloads[item_id], self.vectors[item_id]

    def missing(self, version: str, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        ids = sorted(i for i in self.payloads if version not in self.vectors[i] and (cursor is None or i >= cursor))
        page, rest = ids[:limit], ids[limit:]
        return [dict(self.payloads[i]) for i in page], (rest[0] if rest else None)

    def set_vector(self, item_id: str, version: str, vector: np.ndarray, write_id: str | None) -> bool:
        if item_id not in self.payloads or self.payloads[item_id].get("write_id") != write_id:
            return False
        self.vectors[item_id][version] = vector
        return True

    def coverage(self, version: str) -> tuple[int, int]:
        return sum(version in v for v in self.vectors.values()), len(self.vectors)


def fake_vector(data: bytes) -> np.ndarray:
    return np.frombuffer(hashlib.sha256(data).digest()[:16], dtype=np.float32).copy()


async def load_url(payload: dict[str, Any]) -> bytes:
    return payload["image_url"].encode()


async def embed(data: bytes) -> np.ndarray:
    await asyncio.sleep(0)
    return fake_vector(data)


def backfill(store: MemoryStore, **kwargs: Any) -> Backfill:
    kwargs.setdefault("load_image", load_url)
    kwargs.setdefault("embed", embed)
    return Backfill(store, "v2", page_size=7, **kwargs)


def test_partition_parse_and_validation() -> None:
    assert Partition.parse(None) == Partition(0, 1)
    assert Partition.parse("2/5") == Partition(2, 5)
    assert str(Partition.parse(" 1/3")) == "1/3"
    for bad in ("3/3", "-1/3", "1/0", "1", "a/b", "1/3/4"):
        with pytest.raises(ValidationError):
            Partition.parse(bad)


def test_partition_is_a_stable_hash_that_puts_each_item_in_exactly_one_part() -> None:
    # int(sha256("item-000").hexdigest()[:8], 16) = 0x... ; computed independently here
    expected = int(hashlib.sha256(b"item-000").hexdigest()[:8], 16) % 7
    assert partition_of("item-000", 7) == expected
    ids = [f"item-{i}" for i in range(300)]
    parts = [Partition(i, 3) for i in range(3)]
    for item_id in ids:
        assert sum(p.holds(item_id) for p in parts) == 1
    sizes = [sum(p.holds(i) for i in ids) for p in parts]
    assert sum(sizes) == 300 and min(sizes) > 50  # a hash, not a range: every part gets a share
    assert all(Partition(0, 1).holds(i) for i in ids)


def test_run_embeds_every_missing_item_and_counts_outcomes() -> None:
    store = MemoryStore(20)
    status = asyncio.run(backfill(store).run())
    assert status.state == "done" and status.finished_at is not None
    assert (status.scanned, status.embedded, status.skipped, status.failed) == (20, 20, 0, 0)
    assert status.missing_at_start == 20 and status.coverage == 1.0
    assert all(np.array_equal(v["v2"], fake_vector(f"http://img/{i}".encode())) for i, v in store.vectors.items())
    again = asyncio.run(backfill(store).run())  # idempotent: nothing left to do
    assert (again.state, again.scanned, again.embedded) == ("done", 0, 0)


def test_partitions_split_the_work_exactly_once() -> None:
    store = MemoryStore(30)
    embedded = [asyncio.run(backfill(store, partition=Partition(i, 3)).run()).embedded for i in range(3)]
    assert sum(embedded) == 30 and all(n > 0 for n in embedded)
    assert store.coverage("v2") == (30, 30)


def test_deleted_and_replaced_items_are_skipped_never_resurrected_or_overwritten() -> None:
    store = MemoryStore(10)

    async def load_and_interfere(payload: dict[str, Any]) -> bytes:
        if payload["item_id"] == "item-002":
            store.delete("item-002")
        if payload["item_id"] == "item-005":  # rewritten with a new image meanwhile: all versions embedded
            store.write("item-005", "new-write", versions=("v1", "v2"))
        return await load_url(payload)

    status = asyncio.run(backfill(store, load_image=load_and_interfere).run())
    assert (status.embedded, status.skipped, status.failed) == (8, 2, 0)
    assert "item-002" not in store.payloads
    assert np.array_equal(store.vectors["item-005"]["v2"], np.ones(4, np.float32))
    assert store.payloads["item-005"]["write_id"] == "new-write"


def test_unfetchable_images_are_reported_and_left_as_they_are() -> None:
    store = MemoryStore(12)
    gone = {"item-001", "item-007"}

    async def load(payload: dict[str, Any]) -> bytes:
        if payload["item_id"] in gone:
            raise ImageFetchFailed("404 from the image host")
        return await load_url(payload)

    status = asyncio.run(backfill(store, load_image=load).run())
    assert status.state == "done"
    assert (status.embedded, status.failed) == (10, 2)
    assert sorted(status.failed_ids) == sorted(gone)
    assert all("v2" not in store.vectors[i] and "v1" in store.vectors[i] for i in gone)
    assert status.coverage == pytest.approx(10 / 12)


def test_an_item_that_changed_while_its_image_loaded_is_skipped_not_failed() -> None:
    store = MemoryStore(6)

    async def load(payload: dict[str, Any]) -> bytes:
        if payload["item_id"] == "item-002":
            raise ItemChanged("item-002")  # its kept file went with a delete or replace
        return await load_url(payload)

    status = asyncio.run(backfill(store, load_image=load).run())
    assert (status.state, status.embedded, status.skipped, status.failed, status.failed_ids) == ("done", 5, 1, 0, [])


def test_at_most_concurrency_images_in_flight() -> None:
    store = MemoryStore(15)
    in_flight = peak = 0

    async def slow_embed(data: bytes) -> np.ndarray:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        for _ in range(3):
            await asyncio.sleep(0)
        in_flight -= 1
        return fake_vector(data)

    status = asyncio.run(backfill(store, embed=slow_embed, concurrency=2).run())
    assert status.embedded == 15
    assert peak == 2  # never more than the bound


def test_no_image_starts_while_live_traffic_is_busy() -> None:
    store = MemoryStore(6)
    looks = 0
    looks_at_load: list[int] = []

    def busy() -> bool:  # busy for the first 5 looks, then quiet
        nonlocal looks
        looks += 1
        return looks <= 5

    async def load(payload: dict[str, Any]) -> bytes:
        looks_at_load.append(looks)
        return await load_url(payload)

    status = asyncio.run(backfill(store, load_image=load, busy=busy).run())
    assert status.embedded == 6
    assert min(looks_at_load) > 5  # the first image waited for the quiet look
    assert looks >= 6 + 5  # and every image looked first


def test_read_traffic_is_quiet_only_some_time_after_the_last_read_ended() -> None:
    now = 100.0
    traffic = ReadTraffic(clock=lambda: now)
    assert traffic.quiet_s() == float("inf")  # no read ever
    with traffic.reading(), traffic.reading():
        now += 5
        assert (traffic.in_flight, traffic.quiet_s()) == (2, 0.0)
    now += 0.003
    assert traffic.in_flight == 0 and traffic.quiet_s() == pytest.approx(0.003)
    with pytest.raises(RuntimeError), traffic.reading():  # a failed read ends too
        raise RuntimeError("store down")
    assert traffic.in_flight == 0 and traffic.quiet_s() == 0.0


def test_no_image_starts_while_a_read_is_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backfill_pacing, "READ_PAUSE_MAX_S", 3600.0)  # the bound out of the way: only the rule
    store = MemoryStore(6)
    traffic = ReadTraffic()
    reads_left = 20
    in_flight_at_load: list[int] = []

    async def load(payload: dict[str, Any]) -> bytes:
        in_flight_at_load.append(traffic.in_flight + reads_left)
        return await load_url(payload)

    async def reads_back_to_back() -> None:
        nonlocal reads_left
        while reads_left:
            with traffic.reading():
                await asyncio.sleep(0.001)
            reads_left -= 1

    async def main() -> Any:
        reader = asyncio.create_task(reads_back_to_back())
        await asyncio.sleep(0)  # the first read is in flight before the backfill starts
        status = await backfill(store, load_image=load, reads_quiet_s=traffic.quiet_s).run()
        await reader
        return status

    status = asyncio.run(asyncio.wait_for(main(), 60))
    assert status.embedded == 6
    assert in_flight_at_load == [0] * 6  # every image waited until the last read was over


def test_constant_reads_slow_the_backfill_but_never_stop_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backfill_pacing, "READ_PAUSE_MAX_S", 0.01)
    store = MemoryStore(5)
    looks = 0

    def always_reading() -> float:  # a read is always in flight
        nonlocal looks
        looks += 1
        return 0.0

    status = asyncio.run(asyncio.wait_for(backfill(store, reads_quiet_s=always_reading).run(), 60))
    assert (status.state, status.embedded) == ("done", 5)
    assert looks >= 5 * 2  # each image paused (looked again) before it went ahead at the minimum rate


def test_a_store_outage_fails_the_run_with_its_reason() -> None:
    store = MemoryStore(10)
    calls = 0

    def broken_set_vector(*args: Any) -> bool:
        nonlocal calls
        calls += 1
        raise StoreUnavailable("qdrant is unreachable")

    store.set_vector = broken_set_vector  # type: ignore[method-assign]
    status = asyncio.run(backfill(store).run())
    assert status.state == "failed"
    assert status.error == "qdrant is unreachable"
    assert status.embedded == 0 and calls >= 1


def test_an_item_written_before_write_ids_existed_is_backfilled() -> None:
    store = MemoryStore(3)
    del store.payloads["item-001"]["write_id"]  # its set_vector is conditional on having no write_id
    status = asyncio.run(backfill(store).run())
    assert (status.embedded, status.failed) == (3, 0)
    assert "v2" in store.vectors["item-001"]
