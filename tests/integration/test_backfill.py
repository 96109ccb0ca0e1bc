"""Backfill of a new model version on both stores: two tiny models (seed 0 "v1", seed 1 "v2"), items written with v1
only, then v2 added as a candidate and filled in.

Interleavings are made deterministic with a loopback image host whose routes can be held: the backfill's download
of an item waits until the test has deleted or rewritten that item, then goes on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.service import backfill_pacing
from app.service.backfill import partition_of
from tests.conftest import Catalog, make_store
from tests.factories import photo
from tests.hardening import assert_error, b64, wait_until
from tests.live import run_process, start_process, stop_process

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class HeldImages:
    """Loopback image host; a held path answers only once the test releases it (and says when it was asked)."""

    port: int = 0
    bodies: dict[str, bytes] = field(default_factory=dict)
    asked: dict[str, threading.Event] = field(default_factory=dict)
    release: dict[str, threading.Event] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def add(self, path: str, body: bytes) -> str:
        self.bodies[path] = body
        return f"http://127.0.0.1:{self.port}{path}"

    def hold(self, path: str) -> None:
        self.asked[path], self.release[path] = threading.Event(), threading.Event()


@contextmanager
def held_images() -> Iterator[HeldImages]:
    state = HeldImages()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits.append(self.path)
            if self.path in state.release:
                state.asked[self.path].set()
                state.release[self.path].wait(30)
            body = state.bodies.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "image/jpeg" if body is not None else "text/plain")
            data = body if body is not None else b"gone"
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        for event in state.release.values():
            event.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def host() -> Iterator[HeldImages]:
    with held_images() as h:
        yield h


def write_items(client: TestClient, host: HeldImages, n_url: int, n_b64: int) -> list[str]:
    """Items written with the versions active now: URL items (kept URL) and base64 items (kept bytes)."""
    ids = []
    for i in range(n_url):
        url = host.add(f"/u{i}.jpg", photo(100 + i))
        response = client.post("/items", json={"item_id": f"url-{i}", "image_url": url, "category": "c"})
        assert response.status_code == 201, response.text
        ids.append(f"url-{i}")
    for i in range(n_b64):
        response = client.post("/items", json={"item_id": f"b64-{i}", "image_base64": b64(photo(200 + i))})
        assert response.status_code == 201, response.text
        ids.append(f"b64-{i}")
    return ids


def run_backfill(client: TestClient, partition: str | None = None) -> dict[str, Any]:
    params = {"partition": partition} if partition else {}
    started = client.post("/models/v2/backfill", params=params)
    assert started.status_code == 202, started.text
    return wait_for_end(client)


def wait_for_end(client: TestClient) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def ended() -> bool:
        nonlocal last
        response = client.get("/models/v2/backfill")
        assert response.status_code == 200, response.text
        last = response.json()
        return last["state"] != "running"

    wait_until(ended, timeout_s=120, what="backfill end")
    return last


def coverage(client: TestClient, version: str) -> float:
    body = client.get("/models").json()
    return next(v["coverage"] for v in body["versions"] if v["model_version"] == version)


def test_backfill_fills_the_new_version_and_partitions_cover_every_item_once(
    catalog: Catalog, host: HeldImages
) -> None:
    m = catalog.models
    with catalog.app(m.v1) as client:
        ids = write_items(client, host, n_url=9, n_b64=6)
    with catalog.app(m.v1, m.v2) as client:
        idle = client.get("/models/v2/backfill").json()
        assert (idle["state"], idle["coverage"]) == ("idle", 0.0)
        assert_error(client.get("/similar/url-0", params={"model_version": "v2"}), 409, "model_not_ready")
        assert_error(client.get("/models/v9/backfill"), 404, "model_not_found")
        assert_error(client.post("/models/v9/backfill"), 404, "model_not_found")
        assert_error(client.post("/models/v2/backfill", params={"partition": "3/3"}), 422, "validation_error")

        statuses = [run_backfill(client, f"{i}/3") for i in range(3)]
        for i, status in enumerate(statuses):
            mine = sorted(x for x in ids if partition_of(x, 3) == i)
            assert status["state"] == "done", status
            assert status["partition"] == f"{i}/3"
            assert (status["scanned"], status["embedded"], status["skipped"], status["failed"]) == (
                len(mine),
                len(mine),
                0,
                0,
            )
        assert sum(s["embedded"] for s in statuses) == len(ids)
        assert statuses[-1]["coverage"] == 1.0 and coverage(client, "v2") == 1.0

        for item_id in ids:  # every item is ranked by v2 now, with v2's own scores
            answer = client.get(f"/similar/{item_id}", params={"model_version": "v2", "k": 3})
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == "v2" and len(answer.json()["results"]) == 3
        again = run_backfill(client)  # idempotent: nothing left to do
        assert (again["state"], again["scanned"], again["embedded"]) == ("done", 0, 0)
        metrics = client.get("/metrics").text
        assert 'lookalike_model_coverage_ratio{version="v2"} 1.0' in metrics
        assert 'lookalike_backfill_items_total{outcome="embedded",version="v2"}' in metrics


def test_a_backfill_with_a_read_always_in_flight_completes_and_every_read_is_answered(
    catalog: Catalog, host: HeldImages, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backfill_pacing, "READ_PAUSE_MAX_S", 0.05)  # the minimum rate, quick for a test
    m = catalog.models
    with catalog.app(m.v1) as client:
        ids = write_items(client, host, n_url=4, n_b64=6)
    with catalog.app(m.v1, m.v2) as client:
        traffic = client.app.state.services.items.read_traffic  # type: ignore[attr-defined]
        assert traffic.quiet_s() == float("inf")
        assert client.get("/similar/url-0", params={"k": 3}).status_code == 200
        assert traffic.quiet_s() < float("inf") and traffic.in_flight == 0  # GET /similar is counted
        held = traffic.reading()  # a read in flight through the whole run: the yielding rule's worst case
        client.portal.call(held.__enter__)  # type: ignore[union-attr]
        try:
            assert client.post("/models/v2/backfill").status_code == 202
            status, answered, deadline = client.get("/models/v2/backfill").json(), 0, time.monotonic() + 120
            while status["state"] == "running" and time.monotonic() < deadline:
                answer = client.get(f"/similar/{ids[answered % len(ids)]}", params={"k": 3})
                assert answer.status_code == 200, answer.text
                assert [r["item_id"] for r in answer.json()["results"]] != []
                answered += 1
                status = client.get("/models/v2/backfill").json()
            assert traffic.in_flight == 1  # the held read was in flight all along
        finally:
            client.portal.call(held.__exit__, None, None, None)  # type: ignore[union-attr]
        assert status["state"] == "done", status
        assert (status["embedded"], status["failed"]) == (len(ids), 0)
        assert answered >= 1 and coverage(client, "v2") == 1.0
        answer = client.get("/similar/b64-0", params={"model_version": "v2", "k": 3})
        assert answer.status_code == 200 and len(answer.json()["results"]) == 3


def test_backfill_never_resurrects_a_deleted_item_nor_overwrites_a_replaced_one(
    catalog: Catalog, host: HeldImages
) -> None:
    m = catalog.models
    with catalog.app(m.v1) as client:
        write_items(client, host, n_url=6, n_b64=0)
    host.hold("/u1.jpg")
    host.hold("/u4.jpg")
    with catalog.app(m.v1, m.v2) as client:
        assert client.post("/models/v2/backfill").status_code == 202
        assert host.asked["/u1.jpg"].wait(60), "the backfill never fetched u1"
        assert client.delete("/items/url-1").status_code == 204  # deleted while its image downloads
        host.release["/u1.jpg"].set()
        assert host.asked["/u4.jpg"].wait(60), "the backfill never fetched u4"
        replacement = host.add("/new4.jpg", photo(999))
        # rewritten while its old image downloads: the new write embeds both versions itself
        assert client.post("/items", json={"item_id": "url-4", "image_url": replacement}).status_code == 200
        new_v2 = client.get("/similar/url-4", params={"model_version": "v2", "k": 5}).json()["results"]
        host.release["/u4.jpg"].set()
        status = wait_for_end(client)

        assert status["state"] == "done", status
        assert (status["embedded"], status["skipped"], status["failed"]) == (4, 2, 0)
        assert_error(client.get("/items/url-1"), 404, "item_not_found")
        assert client.get("/items").json()["items"].__len__() == 5
        assert client.get("/similar/url-4", params={"model_version": "v2", "k": 5}).json()["results"] == new_v2
        assert client.get("/items/url-4").json()["image_url"] == replacement
        assert coverage(client, "v2") == 1.0


def test_kept_bytes_deleted_or_replaced_while_the_backfill_reads_them_are_skipped_not_failed(
    catalog: Catalog, host: HeldImages
) -> None:
    """A delete or replace removes the item's kept file: a backfill that read the old payload finds no bytes.
    That is the item moving on, not a lost image: skipped (the replace carries every version itself)."""
    m = catalog.models
    with catalog.app(m.v1) as client:
        write_items(client, host, n_url=0, n_b64=3)
    with catalog.app(m.v1, m.v2) as client:
        service = client.app.state.services.items  # type: ignore[attr-defined]
        kept_get = service.image_store.get
        first_read = threading.Lock()
        interfered: list[int] = []

        def get_after_a_race(key: str) -> bytes | None:
            # before the backfill's first read of a kept file: a delete and a replace are acknowledged
            with first_read:
                if not interfered:
                    interfered.append(client.delete("/items/b64-1").status_code)
                    body = {"item_id": "b64-2", "image_base64": b64(photo(999))}
                    interfered.append(client.post("/items", json=body).status_code)
            return kept_get(key)

        service.image_store.get = get_after_a_race
        status = run_backfill(client)
        assert interfered == [204, 200]
        assert (status["state"], status["embedded"], status["skipped"], status["failed"]) == ("done", 1, 2, 0)
        assert status["failed_ids"] == []
        assert_error(client.get("/items/b64-1"), 404, "item_not_found")
        assert coverage(client, "v2") == 1.0


def test_an_unfetchable_image_is_reported_and_its_item_keeps_serving_v1(catalog: Catalog, host: HeldImages) -> None:
    m = catalog.models
    with catalog.app(m.v1) as client:
        write_items(client, host, n_url=4, n_b64=2)
    del host.bodies["/u2.jpg"]  # the listing's photo is gone from its host
    with catalog.app(m.v1, m.v2) as client:
        status = run_backfill(client)
        assert status["state"] == "done"
        assert (status["embedded"], status["failed"], status["failed_ids"]) == (5, 1, ["url-2"])
        assert status["coverage"] == pytest.approx(5 / 6)
        assert client.get("/similar/url-2").json()["model_version"] == "v1"
        assert client.get("/similar/url-2").status_code == 200
        assert_error(client.get("/similar/url-2", params={"model_version": "v2"}), 409, "model_not_ready")
        running_twice = client.post("/models/v2/backfill")  # a rerun tries it again, and reports it again
        assert running_twice.status_code == 202
        assert wait_for_end(client)["failed_ids"] == ["url-2"]


@pytest.mark.parametrize("store_kind", ["edge"])
def test_kill_9_mid_backfill_then_rerun_completes(catalog: Catalog, host: HeldImages) -> None:
    m = catalog.models
    with catalog.app(m.v1) as client:
        ids = write_items(client, host, n_url=10, n_b64=2)
    catalog.store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env.update(
        LOOKALIKE_MODEL_PATH=f"{m.v1_path},{m.v2_path}",
        LOOKALIKE_QDRANT_PATH=str(catalog.settings.qdrant_path),
        LOOKALIKE_FETCH_ALLOW_PRIVATE="true",
        LOOKALIKE_DEVICE="cpu",
        PYTHONUNBUFFERED="1",
    )
    command = [sys.executable, "-m", "app.cli", "models", "backfill", "v2"]
    held = "/u6.jpg"
    host.hold(held)
    process = start_process(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert host.asked[held].wait(120), "the backfill never reached u6"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        stop_process(process)
    assert process.returncode == -signal.SIGKILL
    host.release[held].set()

    rerun = run_process(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "backfill of v2 (partition 0/1) done" in rerun.stderr
    embedded = int(rerun.stderr.split("done: ")[1].split(" embedded")[0])
    assert 1 <= embedded <= len(ids)

    catalog.store = make_store("edge", catalog.settings)
    with catalog.app(m.v1, m.v2) as client:
        assert coverage(client, "v2") == 1.0
        assert sorted(i["item_id"] for i in client.get("/items").json()["items"]) == sorted(ids)


@pytest.mark.parametrize("store_kind", ["edge"])
def test_cli_backfill_through_a_running_service_and_compare(
    catalog: Catalog, host: HeldImages, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.cli import main
    from tests.live import live_server

    m = catalog.models
    with catalog.app(m.v1) as client:
        ids = write_items(client, host, n_url=6, n_b64=2)
    catalog.store.close()
    del host.bodies["/u3.jpg"]
    env = {
        "LOOKALIKE_MODEL_PATH": f"{m.v1_path},{m.v2_path}",
        "LOOKALIKE_QDRANT_PATH": str(catalog.settings.qdrant_path),
        "LOOKALIKE_FETCH_ALLOW_PRIVATE": "true",
        "LOOKALIKE_DEVICE": "cpu",
        "LOOKALIKE_API_KEY": "secret-key",
    }
    with live_server(env) as server:
        assert main(["models", "backfill", "v2", "--url", server.url]) == 1  # no key: 401, said on stderr
        assert "401 unauthorized" in capsys.readouterr().err
        code = main(["models", "backfill", "v2", "--url", server.url, "--api-key", "secret-key", "--poll-s", "0.05"])
        err = capsys.readouterr().err
        assert code == 3, err  # done, one image gone
        assert "7 embedded, 0 skipped, 1 failed" in err and "failed items: url-3" in err

        assert main(["models", "compare", "v1", "v2", "--url", server.url, "--sample", "5", "--k", "3", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        # url-3 has no v2 vector: counted, not compared, when sampled
        assert report["sampled"] == 5 and report["compared"] + report["not_ranked"] == 5
        assert report["k"] == 3 and 0.0 <= report["overlap_mean"] <= 1.0
        assert set(report["scores_v1"]) == {"p5", "p25", "p50", "p75", "p95"}
        assert {c["item_id"] for c in report["changed_most"]} <= set(ids)
        assert main(["models", "compare", "v1", "v2", "--url", server.url, "--sample", "5", "--k", "3"]) == 0
        assert "v1 vs v2:" in capsys.readouterr().out

    # the same comparison in-process gives the same report (seeded sample, same store)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["models", "compare", "v1", "v2", "--sample", "5", "--k", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == report
    catalog.store = make_store("edge", catalog.settings)
