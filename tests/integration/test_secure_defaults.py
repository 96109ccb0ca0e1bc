"""Secure defaults, tried from outside: no open service on a public address, a separate admin key, strict
query strings on every route, bounded metric labels, one backfill per version, a registry that converges
when replicas change it at once, and encoder metrics per model version."""

from __future__ import annotations

import os
import random
import re
import socket
import string
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from qdrant_client import QdrantClient

from app.core.errors import ModelNotFound, ModelServing
from app.core.exposure import is_loopback
from app.store.qdrant_edge import EdgeStore
from app.store.qdrant_registry import RegistryPoint
from app.store.qdrant_server import ServerStore
from app.store.versions import StoredVersion, promoted, retired
from tests.conftest import Catalog
from tests.factories import photo
from tests.hardening import assert_error, b64, wait_until
from tests.integration.test_backfill import HeldImages, held_images, write_items
from tests.live import live_server

ROOT = Path(__file__).resolve().parents[2]
WRITE_KEY, ADMIN_KEY = "w" * 32, "a" * 32


@pytest.fixture
def host() -> Iterator[HeldImages]:
    with held_images() as h:
        yield h


def run_app(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    clean.update({"HF_HUB_OFFLINE": "1", "LOOKALIKE_QDRANT_PATH": str(tmp_path / "q"), **env})
    return subprocess.run(
        [sys.executable, "-m", "app"], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


# ---------------------------------------------------------------------- no open service on a public address


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "lookalike.example.com"])
def test_a_public_address_without_a_key_refuses_to_start_before_loading_anything(tmp_path: Path, host: str) -> None:
    model = tmp_path / "absent" / "siglip.onnx"  # no model: the refusal comes first, nothing is exported
    result = run_app(tmp_path, LOOKALIKE_HOST=host, LOOKALIKE_MODEL_PATH=str(model))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "LOOKALIKE_API_KEY" in lines[0] and host in lines[0], result.stderr
    assert "LOOKALIKE_ALLOW_UNAUTHENTICATED" in lines[0]
    assert not model.exists() and "exporting" not in result.stderr


def test_loopback_names_and_addresses_are_told_apart() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com", "localhost.evil.com"))


def test_allow_unauthenticated_starts_on_a_public_address_warns_and_says_so_in_info(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    env = {
        "LOOKALIKE_HOST": "0.0.0.0",
        "LOOKALIKE_ALLOW_UNAUTHENTICATED": "true",
        "LOOKALIKE_MODEL_PATH": str(tiny_model_path),
        "LOOKALIKE_QDRANT_PATH": str(tmp_path / "q"),
    }
    with live_server(env) as server:
        info = httpx.get(server.url + "/info", timeout=10)
        assert info.status_code == 200 and info.json()["allow_unauthenticated"] is True
        warnings = [line for line in server.log().splitlines() if "WARNING" in line]
        assert any("LOOKALIKE_ALLOW_UNAUTHENTICATED=true" in line for line in warnings), server.log()


# ---------------------------------------------------------------------------------------- the admin key


def test_the_write_key_writes_items_but_cannot_administer_models_or_experiments(
    catalog: Catalog, host: HeldImages
) -> None:
    m = catalog.models
    with catalog.app(m.v1, m.v2, api_key=WRITE_KEY, admin_api_key=ADMIN_KEY) as client:
        write, admin = ({"Authorization": f"Bearer {key}"} for key in (WRITE_KEY, ADMIN_KEY))
        url = host.add("/x.jpg", photo(1))
        assert client.post("/items", json={"item_id": "x", "image_url": url}, headers=write).status_code == 201
        assert_error(client.post("/items", json={"item_id": "y", "image_url": url}, headers=admin), 401, "unauthorized")
        variants = [
            {"name": "control", "model_version": "v1", "weight": 1},
            {"name": "new", "model_version": "v2", "weight": 1},
        ]
        spec = {"unit": "user", "variants": variants}
        refused = [
            client.post("/models/v2/promote", params={"force": "true"}, headers=write),
            client.delete("/models/v2", headers=write),
            client.post("/models/v2/backfill", headers=write),
            client.put("/experiments/e1", json=spec, headers=write),
            client.post("/experiments/e1/stop", headers=write),
        ]
        for response in refused:
            assert_error(response, 403, "forbidden")
            assert "LOOKALIKE_ADMIN_API_KEY" in response.json()["error"]["message"]
        assert_error(client.post("/models/v2/promote", params={"force": "true"}), 401, "unauthorized")
        assert client.get("/models").json()["serving"] == "v1"  # nothing changed
        assert client.post("/models/v2/promote", params={"force": "true"}, headers=admin).status_code == 200
        assert client.get("/models").json()["serving"] == "v2"
        assert client.put("/experiments/e1", json=spec, headers=admin).status_code == 201


# ------------------------------------------------------------------------------ strict query parameters

PATH_VALUES = {"item_id": "x", "version": "v1", "name": "e1", "n": "0"}


def api_calls(client: TestClient) -> list[tuple[str, str]]:
    """(method, path) of every API route of the app (its OpenAPI schema), path parameters filled in."""
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    return [
        (method.upper(), re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m[1]], path))
        for path, operations in paths.items()
        for method in operations
    ]


def test_every_api_route_refuses_an_unknown_query_parameter(catalog: Catalog) -> None:
    with catalog.app(catalog.models.v1) as client:
        calls = api_calls(client)
        assert len(calls) >= 20 and ("POST", "/models/v1/backfill") in calls  # the list is the app's own
        for method, path in calls:
            response = client.request(method, path, params={"zz_unknown": "1"}, json={})
            assert_error(response, 422, "validation_error")
            assert "zz_unknown" in response.json()["error"]["message"], (method, path)
        # the web page reads its own address (?item=..., filters): it is not an API route
        assert client.get("/", params={"item": "x", "category": "c"}).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "params", "named"),
    [
        ("POST", "/models/v1/backfill", {"partiton": "0/4"}, "partiton"),
        ("POST", "/models/v1/backfill", {"partition": "²/3"}, "partition"),
        ("POST", "/models/v1/backfill", {"partition": "0/١"}, "partition"),
        ("POST", "/models/v1/promote", {"forse": "true"}, "forse"),
        ("DELETE", "/models/v1", {"forse": "true"}, "forse"),
        ("GET", "/similar/x", {"k": "١٠"}, "k"),
        ("GET", "/items", {"limit": "²"}, "limit"),
        ("POST", "/models/v%20one/promote", {}, "version"),
        ("GET", "/models/%C2%B2!/backfill", {}, "version"),
    ],
)
def test_admin_parameters_and_numbers_are_checked(
    catalog: Catalog, method: str, path: str, params: dict[str, str], named: str
) -> None:
    with catalog.app(catalog.models.v1) as client:
        response = client.request(method, path, params=params)
        assert_error(response, 422, "validation_error")
        assert named in response.json()["error"]["message"]


# ---------------------------------------------------------------------------------- bounded metric labels


def raw_request(port: int, line: str) -> bytes:
    """One request sent byte for byte (httpx would normalise the method and path)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"{line}\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_made_up_methods_and_paths_add_no_metric_series(tmp_path: Path, tiny_model_path: Path) -> None:
    env = {"LOOKALIKE_MODEL_PATH": str(tiny_model_path), "LOOKALIKE_QDRANT_PATH": str(tmp_path / "q")}
    rng = random.Random(7)

    def word(n: int) -> str:
        return "".join(rng.choice(string.ascii_uppercase) for _ in range(n))

    def attack(count: int) -> None:
        for _ in range(count):
            assert raw_request(server.port, f"{word(10)} / HTTP/1.1").startswith(b"HTTP/1.1 405")
            assert raw_request(server.port, f"GET /{word(8).lower()}/{word(5)} HTTP/1.1").startswith(b"HTTP/1.1 404")
            assert raw_request(server.port, f"{word(7)} /{word(6)}?{word(3)}=1 HTTP/1.1").startswith(b"HTTP/1.1 404")

    with live_server(env) as server:
        attack(1)  # the first of each kind opens its (bounded) series: OTHER / unmatched
        httpx.get(server.url + "/metrics", timeout=10)  # and the scrape its own
        before = series(httpx.get(server.url + "/metrics", timeout=10).text)
        attack(40)
        after = series(httpx.get(server.url + "/metrics", timeout=10).text)
    assert after == before, sorted(after - before)[:10]
    methods = {dict(labels).get("method") for name, labels in after if name == "lookalike_http_requests_total"}
    assert "OTHER" in methods and methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER"}


# ------------------------------------------------------------------------------------ one backfill at once


def test_concurrent_backfill_starts_give_one_run_and_409s_and_shutdown_stops_it(
    catalog: Catalog, host: HeldImages
) -> None:
    m = catalog.models
    with catalog.app(m.v1) as client:
        write_items(client, host, n_url=3, n_b64=0)
    host.hold("/u0.jpg")
    host.hold("/u1.jpg")
    host.hold("/u2.jpg")
    with catalog.app(m.v1, m.v2) as client:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: client.post("/models/v2/backfill"), range(6)))
        started = [a for a in answers if a.status_code == 202]
        assert len(started) == 1, [a.text for a in answers]
        for answer in answers:
            if answer.status_code != 202:
                assert_error(answer, 409, "backfill_running")
                assert answer.json()["backfill"]["state"] == "running"
                assert answer.json()["backfill"]["version"] == "v2"
        wait_until(lambda: any(h.is_set() for h in host.asked.values()), what="the run reaching an image")
        backfills = client.app.state.services.backfills  # type: ignore[attr-defined]
        run = client.get("/models/v2/backfill").json()
        assert run["state"] == "running"
    # the lifespan ended: the run was cancelled and waited for, not left behind
    assert not backfills._all
    assert backfills._runs["v2"][0].status.state == "stopped"


# ------------------------------------------------------------------- the registry under concurrent changes

DIMS = {"va": 4, "vb": 4, "vc": 4}


def states(rows: list[Any]) -> dict[str, str]:
    return {v.model_version: v.state for v in rows}


def test_replicas_promote_and_retire_at_once_and_a_retired_version_never_comes_back() -> None:
    # Two replicas = two ServerStores on one qdrant-client local-mode instance (local mode cannot be opened by two
    # clients at once). Replica A decides from a registry that replica B changes before A's write lands.
    client = QdrantClient(":memory:")
    a, b = ServerStore(client, "items"), ServerStore(client, "items")
    a.open(DIMS)
    b.open(DIMS)
    a_registry = RegistryPoint(client, "items")

    def racing(change: Any, other: Any) -> Any:
        raced: list[bool] = []

        def decide(rows: list[StoredVersion]) -> list[StoredVersion]:
            if not raced:
                raced.append(True)
                other()  # lands between A's read and A's write
            return change(rows)

        return decide

    with pytest.raises(ModelNotFound):  # A promotes vb while B retires it: vb stays retired
        a_registry.change(racing(lambda rows: promoted(rows, "vb"), lambda: b.retire("vb")))
    assert states(a._registry(fresh=True)) == {"va": "serving", "vb": "retired", "vc": "candidate"}

    with pytest.raises(ModelServing):  # A retires vc while B promotes it: vc serves
        a_registry.change(racing(lambda rows: retired(rows, "vc")[0], lambda: b.promote("vc")))
    assert states(b._registry(fresh=True)) == {"va": "candidate", "vb": "retired", "vc": "serving"}

    # A new candidate registered by one replica while the other promotes: both changes stay
    c = ServerStore(client, "items")
    add_vd = racing(lambda rows: [*rows, StoredVersion("vd", "candidate", 4, "vd")], lambda: b.promote("va"))
    rows = a_registry.change(add_vd)
    assert states(rows) == {"va": "serving", "vb": "retired", "vc": "candidate", "vd": "candidate"}
    assert [v.state for v in c.open({"va": 4, "vc": 4, "vd": 4})] == ["serving", "retired", "candidate", "candidate"]


def test_embedded_store_refuses_a_stale_retire_with_409_not_500(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "q", "items")
    try:
        store.open(DIMS)
        store.promote("vb")
        with pytest.raises(ModelServing):  # what a retire racing that promote meets
            store.retire("vb")
        store.retire("vc")
        with pytest.raises(ModelNotFound):  # a second retire of the same version
            store.retire("vc")
        with pytest.raises(ModelNotFound):  # a promote racing that retire
            store.promote("vc")
        assert states(store._state.manifest.versions) == {"va": "candidate", "vb": "serving", "vc": "retired"}
    finally:
        store.close()


# --------------------------------------------------------------------------- encoder metrics per version


def samples(text: str, name: str) -> dict[str, float]:
    """{version label: value} of one sample name."""
    return {
        s.labels["version"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and "version" in s.labels
    }


def test_each_model_version_has_its_own_encoder_series(catalog: Catalog) -> None:
    m = catalog.models
    with catalog.app(m.v1, m.v2) as client:
        before = client.get("/metrics").text
        for i in range(3):
            body = {"item_id": f"m{i}", "image_base64": b64(photo(i))}
            assert client.post("/items", json=body).status_code == 201
        after = client.get("/metrics").text
    for name in ("lookalike_batch_size_count", "lookalike_inference_duration_seconds_count"):
        old, new = samples(before, name), samples(after, name)
        for version in ("v1", "v2"):
            assert new[version] - old.get(version, 0.0) >= 1, (name, version, old, new)
    sizes = samples(after, "lookalike_batch_size_sum")
    olds = samples(before, "lookalike_batch_size_sum")
    assert sizes["v1"] - olds.get("v1", 0.0) == sizes["v2"] - olds.get("v2", 0.0) == 3  # each embedded 3 images
    assert {"v1", "v2"} <= set(samples(after, "lookalike_batch_queue_depth"))
