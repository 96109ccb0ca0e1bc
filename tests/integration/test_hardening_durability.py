"""Durability and idempotency: a write answered 2xx survives `kill -9` of the server
the next instant (a loop of kills under write load on the real embedded store), and retrying the same
POST leaves exactly one item."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.encode.encoder import OnnxImageEncoder
from tests.factories import photo
from tests.hardening import SCALE, WriteLoad, b64, missing_items, open_app, wait_until
from tests.live import live_server

KILL_ROUNDS = 3 * SCALE
ACKS_BEFORE_KILL = 12


def test_kill_9_under_write_load_loses_no_acknowledged_write(tiny_model_path: Path, tmp_path: Path) -> None:
    env = {
        "LOOKALIKE_MODEL_PATH": str(tiny_model_path),
        "LOOKALIKE_QDRANT_PATH": str(tmp_path / "qdrant"),
        "LOOKALIKE_LOG_LEVEL": "warning",
    }
    images = [photo(i, size=96) for i in range(6)]
    acked: list[str] = []
    in_flight_at_kill = 0
    for round_no in range(KILL_ROUNDS):
        with live_server(env) as server:
            assert missing_items(server.url, acked) == [], f"lost after kill {round_no}"
            load = WriteLoad(server.url, images, f"k{round_no}", threads=3).start()
            wait_until(lambda: len(load.acked) >= ACKS_BEFORE_KILL, timeout_s=120, what="acknowledged writes")  # noqa: B023
            server.process.kill()  # SIGKILL while the writers are mid-request
            server.process.wait(timeout=30)
            load.stop()
            assert load.server_errors() == []
            acked += load.acked
            in_flight_at_kill += len(load.broken)
    with live_server(env) as server:
        lost = missing_items(server.url, acked)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            sample = acked[-1]
            assert client.get(f"/items/{sample}").json()["item_id"] == sample
            assert client.get(f"/similar/{sample}").status_code == 200
    print(
        f"kill -9 loop: {KILL_ROUNDS} kills, {len(acked)} acknowledged writes, "
        f"{in_flight_at_kill} cut off mid-request, {len(lost)} lost"
    )
    assert lost == []


def test_retrying_the_same_post_leaves_one_item(client: TestClient) -> None:
    body = {"item_id": "retry-1", "image_base64": b64(photo(1)), "title": "tote"}
    statuses = [client.post("/items", json=body).status_code for _ in range(4)]
    assert statuses == [201, 200, 200, 200]
    assert client.post("/items", json={"item_id": "other", "image_base64": b64(photo(2))}).status_code == 201
    store = client.app.state.services.items.store  # type: ignore[attr-defined]
    assert store.count() == 2
    assert [r["item_id"] for r in client.get("/similar/other", params={"k": 100}).json()["results"]] == ["retry-1"]


def test_concurrent_retries_of_one_item_leave_one_item(
    tmp_path: Path, tiny_model_path: Path, tiny_encoder: OnnxImageEncoder
) -> None:
    # The embedded engine only: qdrant-client's local mode (our stand-in for a Qdrant server in tests)
    # is not safe for concurrent writes to one point (IndexError inside it); a real server is.
    with open_app(tmp_path, tiny_model_path, tiny_encoder, "edge") as client:
        body = {"item_id": "race-1", "image_base64": b64(photo(3))}
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: client.post("/items", json=body).status_code, range(8)))
        assert set(statuses) <= {200, 201} and 201 in statuses
        store = client.app.state.services.items.store  # type: ignore[attr-defined]
        assert store.count() == 1
        batch = {"items": [body, {"item_id": "race-2", "image_base64": b64(photo(4))}]}
        assert [r["status"] for r in client.post("/items/batch", json=batch).json()["results"]] == [200, 201]
        assert store.count() == 2


@pytest.mark.parametrize("route", ["/items", "/items/batch"])
def test_a_refused_write_leaves_the_previous_version_untouched(client: TestClient, route: str) -> None:
    good = {"item_id": "keep-1", "image_base64": b64(photo(5)), "title": "first"}
    assert client.post("/items", json=good).status_code == 201
    bad = {**good, "image_base64": b64(b"GIF89a not really"), "title": "second"}
    client.post(route, json=bad if route == "/items" else {"items": [bad]})
    assert client.get("/items/keep-1").json()["title"] == "first"
