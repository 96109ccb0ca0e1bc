"""A catalogue's vectors from a batch job (models.embed_catalog) into the store (`lookalike import`), for real:
tiny models exported by the project's export code, photos from a loopback image server, the embedded store
opened by the command in a child process, then read back through the service."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.cli.import_source import read_rows
from app.http.app import create_app
from tests.conftest import TwoModels, make_settings, make_store
from tests.factories import ImageServer, image_server, near_duplicate, photo
from tests.live import ROOT, run_process, start_process, stop_process

PHOTOS = 6


@dataclass(frozen=True)
class Files:
    items: Path  # the JSONL listings
    v1: Path  # embed_catalog's Parquet with v1 (the model the service serves)
    v2: Path  # ... with v2 (another seed): not the service's vectors
    server: ImageServer


def _env(models: TwoModels, qdrant: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env.update(
        LOOKALIKE_MODEL_PATH=str(models.v1_path),
        LOOKALIKE_QDRANT_PATH=str(qdrant),
        LOOKALIKE_FETCH_ALLOW_PRIVATE="true",
        LOOKALIKE_DEVICE="cpu",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def _embed(models: TwoModels, model: Path, items: Path, out: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "models.embed_catalog", "--model", str(model), "--items", str(items)]
    command += ["--out", str(out), "--batch", "4", "--workers", "2"]
    env = _env(models, out.parent / "unused")
    return run_process(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def files(two_models: TwoModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Files]:
    folder = tmp_path_factory.mktemp("import")
    with image_server() as server:
        lines = []
        for i in range(PHOTOS):
            url = server.add(f"/p{i}.jpg", photo(100 + i))
            lines.append({"item_id": f"item-{i}", "image_url": url, "title": f"thing {i}", "price": 10 + i})
        dup = server.add("/dup.jpg", near_duplicate(photo(100)))
        lines.append({"item_id": "dup-0", "image_url": dup, "category": "bags", "attributes": {"colour": "navy"}})
        lines.append({"item_id": "two", "images": [server.url("/p1.jpg"), server.url("/p2.jpg")], "seller_id": "s1"})
        lines.append({"item_id": "gone", "image_url": server.url("/missing.jpg")})
        items = folder / "items.jsonl"
        items.write_text("".join(json.dumps(line) + "\n" for line in lines))
        v1, v2 = folder / "v1.parquet", folder / "v2.parquet"
        for model, out in ((two_models.v1_path, v1), (two_models.v2_path, v2)):
            done = _embed(two_models, model, items, out)
            assert done.returncode == 3, done.stderr  # one row left out
            assert "row 9 (gone): image_fetch_failed" in done.stderr
        yield Files(items, v1, v2, server)


def _import(models: TwoModels, qdrant: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "app.cli", "import", *args, "--model-version", "v1"]
    return run_process(command, cwd=ROOT, env=_env(models, qdrant, **env), capture_output=True, text=True, timeout=300)


@contextmanager
def service(models: TwoModels, qdrant: Path) -> Iterator[TestClient]:
    settings = make_settings(qdrant.parent, models.v1_path, qdrant_path=qdrant)
    store = make_store("edge", settings)
    try:
        with TestClient(create_app(settings, encoder=[models.v1], store=store)) as client:
            yield client
    finally:
        store.close()


def _ids(client: TestClient) -> list[str]:
    return [item["item_id"] for item in client.get("/items", params={"limit": 200}).json()["items"]]


def test_embed_then_import_serves_the_catalogue(files: Files, two_models: TwoModels, tmp_path: Path) -> None:
    rows = [row for _, row in read_rows(files.v1)]
    assert [r["item_id"] for r in rows] == [*(f"item-{i}" for i in range(PHOTOS)), "dup-0", "two"]
    assert np.asarray(rows[-1]["vector"]).shape == (2, two_models.v1.dim)  # one vector per photo, in order
    assert rows[-1]["images"] == [files.server.url("/p1.jpg"), files.server.url("/p2.jpg")]
    qdrant = tmp_path / "qdrant"

    done = _import(two_models, qdrant, str(files.v1))
    assert done.returncode == 0, done.stderr
    assert "spot-check: 8 row(s) re-embedded with v1" in done.stderr
    with service(two_models, qdrant) as client:
        similar = client.get("/similar/item-0", params={"k": 3}).json()["results"]
        assert similar[0]["item_id"] == "dup-0"
        assert similar[0]["score"] > 0.9
        item = client.get("/items/dup-0").json()
        assert (item["category"], item["attributes"], item["model_version"]) == ("bags", {"colour": "navy"}, "v1")
        assert client.get("/items/two").json()["photo_count"] == 2
        photo_1 = client.get("/items/two/images/1", follow_redirects=False)
        assert (photo_1.status_code, photo_1.headers["location"]) == (307, files.server.url("/p2.jpg"))
        assert sorted(_ids(client)) == sorted(r["item_id"] for r in rows)

    again = _import(two_models, qdrant, str(files.v1))
    assert again.returncode == 0, again.stderr
    assert "nothing new to import" in again.stderr
    with service(two_models, qdrant) as client:
        assert sorted(_ids(client)) == sorted(r["item_id"] for r in rows)


def test_bad_rows_are_reported_and_skipped(files: Files, two_models: TwoModels, tmp_path: Path) -> None:
    rows = [row for _, row in read_rows(files.v1)][:PHOTOS]
    lines = []
    for i, row in enumerate(rows):
        vector = np.asarray(row["vector"], dtype=np.float64)
        if i == 1:
            vector[..., 3] = np.nan
        if i == 2:
            vector = vector[..., :-1]
        if i == 3:
            row["item_id"] = "bad id!"
        lines.append({k: v for k, v in row.items() if v is not None} | {"vector": vector.tolist()})
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(line, allow_nan=True) + "\n" for line in lines))
    rejects = tmp_path / "rejects.jsonl"

    done = _import(two_models, tmp_path / "qdrant", str(source), "--rejects", str(rejects))
    assert done.returncode == 3, done.stderr
    assert "row 2 (item-1): vector: not finite" in done.stderr
    assert f"row 3 (item-2): vector: dimension {two_models.v1.dim - 1}" in done.stderr
    assert "row 4 (bad id!): item_id:" in done.stderr
    assert [json.loads(line)["row"] for line in rejects.read_text().splitlines()] == [2, 3, 4]
    with service(two_models, tmp_path / "qdrant") as client:
        assert sorted(_ids(client)) == ["item-0", "item-4", "item-5"]


def test_vectors_of_another_model_are_refused(files: Files, two_models: TwoModels, tmp_path: Path) -> None:
    qdrant = tmp_path / "qdrant"
    refused = _import(two_models, qdrant, str(files.v2))
    assert refused.returncode == 2, refused.stderr
    assert "refused:" in refused.stderr
    assert "Nothing was written" in refused.stderr
    with service(two_models, qdrant) as client:
        assert _ids(client) == []

    forced = _import(two_models, qdrant, str(files.v2), "--no-check")
    assert forced.returncode == 0, forced.stderr
    assert "WARNING: --no-check" in forced.stderr
    with service(two_models, qdrant) as client:
        assert len(_ids(client)) == 8


def test_a_killed_import_completes_on_a_rerun(two_models: TwoModels, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    ids = [f"r-{i}" for i in range(30)]
    source = tmp_path / "random.jsonl"
    lines = [
        {"item_id": i, "image_url": f"https://images.example.com/{i}.jpg", "vector": v.tolist()}
        for i, v in zip(ids, rng.standard_normal((len(ids), two_models.v1.dim)), strict=True)
    ]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    qdrant = tmp_path / "qdrant"
    command = [sys.executable, "-m", "app.cli", "import", str(source), "--model-version", "v1", "--no-check"]
    command += ["--batch", "4"]
    process = start_process(command, cwd=ROOT, env=_env(two_models, qdrant), stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if line.startswith("committed rows 1..8 "):  # two shards in, the third one staging
                os.killpg(process.pid, signal.SIGKILL)
                break
        process.wait(timeout=30)
    finally:
        stop_process(process)
    assert process.returncode == -signal.SIGKILL

    rerun = run_process([*command], cwd=ROOT, env=_env(two_models, qdrant), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "rows 1..8 of" in rerun.stderr
    with service(two_models, qdrant) as client:
        assert sorted(_ids(client)) == sorted(ids)  # every row once


def test_import_route_writes_through_the_service(files: Files, two_models: TwoModels, tmp_path: Path) -> None:
    rows = [{k: v for k, v in row.items() if v is not None} for _, row in read_rows(files.v1)]
    for row in rows:
        row["vector"] = np.asarray(row["vector"]).tolist()
    rows[2]["vector"] = rows[2]["vector"][:-1]
    with service(two_models, tmp_path / "qdrant") as client:
        answer = client.post("/items/import", json={"model_version": "v1", "items": rows})
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert [r["status"] for r in results] == [201, 201, 422, 201, 201, 201, 201, 201]
        assert results[2]["error"]["code"] == "validation_error"
        assert client.get("/similar/item-0", params={"k": 1}).json()["results"][0]["item_id"] == "dup-0"
        unknown = client.post("/items/import", json={"model_version": "v9", "items": rows[:1]})
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "model_not_found")


def test_import_over_http_to_a_running_service(files: Files, two_models: TwoModels, tmp_path: Path) -> None:
    import httpx

    from tests.live import live_server

    qdrant = tmp_path / "qdrant"
    keys = {"LOOKALIKE_API_KEY": "write-key", "LOOKALIKE_ADMIN_API_KEY": "admin-key"}
    env = {k: v for k, v in _env(two_models, qdrant, **keys).items() if k.startswith("LOOKALIKE_")}
    with live_server(env) as server:
        locked = _import(two_models, qdrant, str(files.v1))  # in-process while the service holds the store
        assert locked.returncode == 1
        assert "stop the service first, or import through it with --url" in locked.stderr

        forbidden = _import(two_models, qdrant, str(files.v1), "--url", server.url, "--api-key", "write-key")
        assert forbidden.returncode == 1
        assert "403 forbidden" in forbidden.stderr

        done = _import(two_models, qdrant, str(files.v1), "--url", server.url, "--api-key", "admin-key", "--batch", "3")
        assert done.returncode == 0, done.stderr
        assert "imported 8 item(s)" in done.stderr
        similar = httpx.get(f"{server.url}/similar/item-0", params={"k": 1}).json()["results"]
        assert similar[0]["item_id"] == "dup-0"
