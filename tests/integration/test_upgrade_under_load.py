"""A whole model upgrade under live traffic, on both stores: v1 serves a catalog, v2 is added as a candidate, then
backfill, promote, roll back, promote again and retire v1 while readers, writers, a patcher and a deleter run.

Checked afterwards from what every thread recorded: no 5xx; every /similar answer ranks with the one version it
names (each score of a never-rewritten item equals the cosine of that version's embeddings, computed here
independently from the same bytes); no deleted item comes back once its delete was acknowledged; every
acknowledged write and patch is what the catalog serves at the end, with v2 only.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from qdrant_client import QdrantClient

from app.core.settings import Settings
from app.encode.encoder import OnnxImageEncoder
from app.ingest.decode import load_pixels_for
from app.store.qdrant_server import ServerStore
from tests.conftest import Catalog, TwoModels, make_settings
from tests.factories import ImageServer, photo
from tests.hardening import assert_error, b64, wait_until

N_URL, N_B64 = 40, 20
# Items of the first catalog that no thread touches: the score checks use their vectors.
STABLE = [f"url-{i}" for i in range(24)] + [f"b64-{i}" for i in range(12)]
REPLACED = [f"url-{i}" for i in range(24, 30)] + [f"b64-{i}" for i in range(12, 15)]  # new photos (writer)
PATCHED = [f"url-{i}" for i in range(30, 35)] + [f"b64-{i}" for i in range(15, 18)]  # new title/price
DELETED = [f"url-{i}" for i in range(35, 40)] + [f"b64-{i}" for i in range(18, 20)]
LOAD_MAX_S = 60  # every load loop also stops by itself after this long
TOL = 1e-4


class OneCallAtATime:
    """qdrant-client's local mode, the tests' stand-in for a Qdrant server, is not safe for concurrent calls (a
    search racing a write raises IndexError inside it); a real server is. Its calls run one at a time here."""

    def __init__(self, client: QdrantClient) -> None:
        self._client, self._lock = client, threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return call


def embed(
    settings: Settings, data: bytes, encoder: OnnxImageEncoder, decoded_for: list[OnnxImageEncoder]
) -> np.ndarray:
    """`encoder`'s vector of these bytes, decoded as the service does for the versions it embeds at once."""
    inputs = [(e.meta.image_size, e.meta.resample) for e in decoded_for]
    pixels = load_pixels_for(data, inputs, settings.image_max_pixels, settings.decode_draft)
    return encoder.embed(pixels[(encoder.meta.image_size, encoder.meta.resample)][None])[0]


@pytest.fixture
def catalog(tmp_path: Path, two_models: TwoModels, store_kind: str) -> Iterator[Catalog]:
    """The shared Catalog, but server mode's local-mode client takes one call at a time (see OneCallAtATime)."""
    settings = make_settings(tmp_path, two_models.v1_path)
    locked = ServerStore(OneCallAtATime(QdrantClient(":memory:")), settings.collection)  # type: ignore[arg-type]
    c = Catalog(tmp_path, two_models, store_kind, store=locked if store_kind == "server" else None)
    try:
        yield c
    finally:
        c.close()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@dataclass
class Read:
    started: float
    item_id: str
    asked: str | None  # the model_version asked for, None = the serving one
    status: int
    body: dict[str, Any]


@dataclass
class Write:
    item_id: str
    image: bytes  # the photo's bytes, whether sent as base64 or served at `url`
    url: str | None
    title: str


@dataclass
class Load:
    """Bounded load threads on one TestClient; each records what it was answered."""

    client: TestClient
    images: ImageServer
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    reads: list[Read] = field(default_factory=list)
    statuses: list[tuple[str, int, str]] = field(default_factory=list)  # (what, status, error code) of writes
    writes: dict[str, Write] = field(default_factory=dict)  # last acknowledged image write per item
    new_items: list[str] = field(default_factory=list)
    patches: dict[str, dict[str, Any]] = field(default_factory=dict)  # last acknowledged patch per item
    deleted_at: dict[str, float] = field(default_factory=dict)  # monotonic time the delete was acknowledged
    threads: list[threading.Thread] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    crashed: list[str] = field(default_factory=list)

    def running(self, n: int, most: int) -> bool:
        return n < most and not self.stop.is_set() and time.monotonic() - self.started < LOAD_MAX_S

    def record(self, what: str, response: Any) -> bool:
        code = response.json()["error"]["code"] if response.status_code >= 400 else ""
        with self.lock:
            self.statuses.append((what, response.status_code, code))
        return 200 <= response.status_code < 300

    def reader(self, seed: int) -> None:
        rng, n = random.Random(seed), 0
        while self.running(n, 600):
            n += 1
            item_id, asked = rng.choice(STABLE), rng.choice([None, None, "v1", "v2"])
            params: dict[str, Any] = {"k": 20} | ({"model_version": asked} if asked else {})
            started = time.monotonic()
            response = self.client.get(f"/similar/{item_id}", params=params)
            with self.lock:
                self.reads.append(Read(started, item_id, asked, response.status_code, response.json()))

    def writer(self, seed: int) -> None:
        rng, n = random.Random(seed), 0
        while self.running(n, 60):
            n += 1
            item_id = rng.choice(REPLACED) if n % 2 else f"new-{n}"
            image, title = photo(1000 + n), f"w{n}"
            body: dict[str, Any] = {"item_id": item_id, "title": title}
            url = self.images.add(f"/w{n}.jpg", image) if rng.random() < 0.5 else None
            body |= {"image_url": url} if url else {"image_base64": b64(image)}
            if self.record("write", self.client.post("/items", json=body)):
                with self.lock:
                    self.writes[item_id] = Write(item_id, image, url, title)
                    if item_id.startswith("new-"):
                        self.new_items.append(item_id)

    def patcher(self, seed: int) -> None:
        rng, n = random.Random(seed), 0
        while self.running(n, 300):
            n += 1
            item_id, fields = rng.choice(PATCHED), {"title": f"p{n}", "price": float(n)}
            if self.record("patch", self.client.patch(f"/items/{item_id}", json=fields)):
                with self.lock:
                    self.patches[item_id] = fields

    def deleter(self) -> None:
        todo, n = list(DELETED), 0
        while todo and self.running(n, 100):
            n += 1
            if self.record("delete", self.client.delete(f"/items/{todo[0]}")):
                with self.lock:
                    self.deleted_at[todo.pop(0)] = time.monotonic()
            self.stop.wait(0.3)  # spread the deletes over the whole upgrade

    def start(self) -> None:
        targets = [(self.reader, (1,)), (self.reader, (2,)), (self.writer, (3,)), (self.patcher, (4,))]
        targets.append((self.deleter, ()))
        self.threads = [threading.Thread(target=self.guarded, args=(f, *a), daemon=True) for f, a in targets]
        for thread in self.threads:
            thread.start()

    def guarded(self, target: Any, *args: Any) -> None:
        try:
            target(*args)
        except BaseException as exc:  # a thread that died silently would leave the checks with less to check
            with self.lock:
                self.crashed.append(repr(exc))
            raise

    def settle(self, reads: int = 20) -> None:
        """Let the load go on for a few more reads before the next admin step (bounded)."""
        with self.lock:
            target = len(self.reads) + reads
        wait_until(lambda: len(self.reads) >= target or self.stop.is_set(), timeout_s=30, what="more reads")

    def end(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in self.threads), "a load thread did not stop"
        assert self.crashed == []


def admin(client: TestClient, method: str, path: str, expect: int) -> dict[str, Any]:
    response = client.request(method, path)
    assert response.status_code == expect, response.text
    return response.json()


def promote_when_covered(client: TestClient, version: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        response = client.post(f"/models/{version}/promote")
        if response.status_code == 200 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            return response.json()
        assert_error(response, 409, "model_not_ready")
        time.sleep(0.1)


def test_upgrade_under_load(catalog: Catalog, images: ImageServer) -> None:
    m = catalog.models
    sources: dict[str, bytes] = {}
    with catalog.app(m.v1) as client:
        for i in range(N_URL):
            sources[f"url-{i}"] = photo(100 + i)
            url = images.add(f"/u{i}.jpg", sources[f"url-{i}"])
            body = {"item_id": f"url-{i}", "image_url": url, "title": "first", "price": 1.0}
            assert client.post("/items", json=body).status_code == 201
        for i in range(N_B64):
            sources[f"b64-{i}"] = photo(300 + i)
            body = {"item_id": f"b64-{i}", "image_base64": b64(sources[f"b64-{i}"]), "title": "first", "price": 1.0}
            assert client.post("/items", json=body).status_code == 201

    # The stable items' vectors, computed here: v1 as written with v1 alone, v2 as the backfill embeds it.
    expected = {
        "v1": {i: embed(catalog.settings, sources[i], m.v1, [m.v1]) for i in STABLE},
        "v2": {i: embed(catalog.settings, sources[i], m.v2, [m.v2]) for i in STABLE},
    }
    # the check has teeth: the two versions rank with clearly different scores
    gaps = [
        abs(cosine(expected["v1"][a], expected["v1"][b]) - cosine(expected["v2"][a], expected["v2"][b]))
        for a in STABLE[:6]
        for b in STABLE[6:12]
    ]
    assert max(gaps) > 0.01

    with catalog.app(m.v1, m.v2) as client:
        load = Load(client, images)
        load.start()
        try:
            load.settle()
            assert admin(client, "POST", "/models/v2/backfill", 202)["state"] in ("running", "done")
            status: dict[str, Any] = {}

            def backfill_ended() -> bool:
                nonlocal status
                status = admin(client, "GET", "/models/v2/backfill", 200)
                return status["state"] != "running"

            wait_until(backfill_ended, timeout_s=120, what="backfill end")
            assert (status["state"], status["failed"]) == ("done", 0), status
            assert promote_when_covered(client, "v2")["serving"] == "v2"
            load.settle()
            assert admin(client, "POST", "/models/v1/promote", 200)["serving"] == "v1"  # roll back
            load.settle()
            assert admin(client, "POST", "/models/v2/promote", 200)["serving"] == "v2"
            load.settle()
            assert admin(client, "DELETE", "/models/v1", 200) == {"model_version": "v1", "state": "retired"}
            load.settle()
            wait_until(lambda: len(load.deleted_at) == len(DELETED), timeout_s=30, what="every delete")
        finally:
            load.end()

        # no 5xx anywhere; the only refusals are the expected ones
        counts: dict[int, int] = {}
        for r in load.reads:
            counts[r.status] = counts.get(r.status, 0) + 1
        for _, s, _ in load.statuses:
            counts[s] = counts.get(s, 0) + 1
        outcomes = {k: status[k] for k in ("scanned", "embedded", "skipped", "failed")}
        print(f"[{catalog.kind}] answers by status: {sorted(counts.items())}, reads {len(load.reads)}, {outcomes}")
        assert not [s for s in counts if s >= 500], counts
        for r in load.reads:
            if r.status != 200:
                allowed = {429: "overloaded", 409: "model_not_ready", 404: "model_not_found"}
                assert allowed.get(r.status) == r.body["error"]["code"], (r.status, r.body)
                assert r.status != 404 or r.asked == "v1", r  # only the retired version is unknown
        for what, s, code in load.statuses:
            assert s < 300 or (s, code) == (429, "overloaded"), (what, s, code)

        # every answer ranks with the one version it names
        checked = {"v1": 0, "v2": 0}
        for r in load.reads:
            if r.status != 200:
                continue
            version = r.body["model_version"]
            assert version in ("v1", "v2") and r.asked in (None, version), r
            query = expected[version][r.item_id]
            for hit in r.body["results"]:
                if hit["item_id"] in expected[version]:
                    want = cosine(query, expected[version][hit["item_id"]])
                    assert hit["score"] == pytest.approx(want, abs=TOL), (r.item_id, version, hit)
                    checked[version] += 1
                # no deleted item comes back in an answer that started after its delete was acknowledged
                gone = load.deleted_at.get(hit["item_id"])
                assert gone is None or r.started < gone, (r, hit)
        assert checked["v1"] > 0 and checked["v2"] > 0, checked

        # the end state: deletes stick, v2 serves every acknowledged write with its last photo, v1 is gone
        assert sorted(load.deleted_at) == sorted(DELETED)
        for item_id in DELETED:
            assert_error(client.get(f"/items/{item_id}"), 404, "item_not_found")
        survivors = STABLE + REPLACED + PATCHED + load.new_items
        assert load.new_items and load.writes and load.patches
        for item_id in survivors:
            answer = client.get(f"/similar/{item_id}", params={"model_version": "v2", "k": 20})
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == "v2"
            assert_error(client.get(f"/similar/{item_id}", params={"model_version": "v1"}), 404, "model_not_found")
            written = load.writes.get(item_id)
            if written is not None:  # its stored v2 vector is the one of the last acknowledged photo
                mine = embed(catalog.settings, written.image, m.v2, [m.v1, m.v2])
                for hit in answer.json()["results"]:
                    if hit["item_id"] in expected["v2"]:
                        want = cosine(mine, expected["v2"][hit["item_id"]])
                        assert hit["score"] == pytest.approx(want, abs=TOL), (item_id, hit)
                item = client.get(f"/items/{item_id}").json()
                assert (item["title"], item["image_url"]) == (written.title, written.url)
                if written.url is None:
                    assert client.get(f"/items/{item_id}/image").content == written.image
        for item_id in PATCHED:
            item = client.get(f"/items/{item_id}").json()
            want = load.patches.get(item_id, {"title": "first", "price": 1.0})
            assert {"title": item["title"], "price": item["price"]} == want, item_id

        body = admin(client, "GET", "/models", 200)
        assert body["serving"] == "v2"
        versions = {v["model_version"]: v for v in body["versions"]}
        assert versions["v1"]["state"] == "retired"
        assert (versions["v2"]["state"], versions["v2"]["coverage"], versions["v2"]["items_missing"]) == (
            "serving",
            1.0,
            0,
        )
