"""Several model versions through the API: writes embed every active version, reads name the version that ranked
them, GET /models, promote (409 until covered, force, roll back), retire, kept image bytes, start-up refusals."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.encode.encoder import EncoderError
from app.encode.model_set import ModelSet
from tests.conftest import Catalog, TwoModels
from tests.factories import ImageServer, photo
from tests.hardening import assert_error, b64
from tests.live import run_process

ROOT = Path(__file__).resolve().parents[2]


def write_three(client: TestClient, images: ImageServer) -> None:
    """One item of each kind of source: a URL, base64 and a multipart upload."""
    url = images.add("/p1.jpg", photo(1))
    assert client.post("/items", json={"item_id": "url-1", "image_url": url}).status_code == 201
    assert client.post("/items", json={"item_id": "b64-2", "image_base64": b64(photo(2))}).status_code == 201
    files = {"image": ("p.jpg", photo(3), "image/jpeg")}
    assert client.post("/items", data={"item_id": "up-3"}, files=files).status_code == 201


def models_by_version(client: TestClient) -> tuple[str, dict[str, dict[str, object]]]:
    response = client.get("/models")
    assert response.status_code == 200, response.text
    body = response.json()
    return body["serving"], {v["model_version"]: v for v in body["versions"]}


def test_upgrade_promote_roll_back_retire(catalog: Catalog, images: ImageServer) -> None:
    m = catalog.models
    with catalog.app(m.v1) as client:
        write_three(client, images)
        serving, versions = models_by_version(client)
        assert serving == "v1"
        assert list(versions) == ["v1"]
        assert versions["v1"]["state"] == "serving"
        assert versions["v1"]["coverage"] == 1.0
        assert versions["v1"]["items_missing"] == 0

    with catalog.app(m.v1, m.v2) as client:  # restart with the new model: it becomes a candidate
        serving, versions = models_by_version(client)
        assert serving == "v1"
        assert {v: versions[v]["state"] for v in versions} == {"v1": "serving", "v2": "candidate"}
        assert versions["v2"] == {
            "model_version": "v2",
            "state": "candidate",
            "coverage": 0.0,
            "items_missing": 3,
            "dim": m.v2.dim,
            "image_size": m.v2.image_size,
            "precision": m.v2.precision,
            "provider": m.v2.provider,
        }

        # the service embeds one image with several versions from one decode (what a backfill uses)
        service = client.app.state.services.items  # type: ignore[attr-defined]
        vectors = client.portal.call(service.embed_versions, photo(2), ["v1", "v2"])  # type: ignore[union-attr]
        assert {v: a.shape for v, a in vectors.items()} == {"v1": (m.v1.dim,), "v2": (m.v2.dim,)}

        # an old item has no v2 vector yet; a new write carries both
        assert_error(client.get("/similar/b64-2", params={"model_version": "v2"}), 409, "model_not_ready")
        written = client.post("/items", json={"item_id": "new-4", "image_base64": b64(photo(4))})
        assert written.status_code == 201
        assert written.json()["model_version"] == "v1"  # the serving version
        by_v2 = client.get("/similar/new-4", params={"model_version": "v2", "k": 10})
        assert by_v2.status_code == 200, by_v2.text
        assert by_v2.json()["model_version"] == "v2"
        assert [r["item_id"] for r in by_v2.json()["results"]] == []  # no other item has a v2 vector yet
        by_v1 = client.get("/similar/new-4", params={"k": 10})
        assert by_v1.json()["model_version"] == "v1"
        assert {r["item_id"] for r in by_v1.json()["results"]} == {"url-1", "b64-2", "up-3"}
        assert_error(client.get("/similar/new-4", params={"model_version": "nope"}), 404, "model_not_found")

        # search by photo embeds with the model asked for, and ranks with its vectors
        photo_v2 = client.post("/similar", json={"image_base64": b64(photo(4)), "model_version": "v2"})
        assert photo_v2.status_code == 200, photo_v2.text
        assert photo_v2.json()["model_version"] == "v2"
        assert [r["item_id"] for r in photo_v2.json()["results"]] == ["new-4"]
        assert client.post("/similar", json={"image_base64": b64(photo(4))}).json()["model_version"] == "v1"

        _, versions = models_by_version(client)
        assert versions["v2"]["coverage"] == pytest.approx(0.25)
        assert versions["v2"]["items_missing"] == 3

        # promote: refused while items lack v2, forced it says how many drop out
        refused = client.post("/models/v2/promote")
        assert_error(refused, 409, "model_not_ready")
        assert "3" in refused.json()["error"]["message"]
        forced = client.post("/models/v2/promote", params={"force": "true"})
        assert forced.status_code == 200, forced.text
        assert forced.json() == {"serving": "v2", "previous": "v1", "coverage": 0.25, "items_missing": 3}
        assert client.get("/similar/new-4").json()["model_version"] == "v2"
        assert_error(client.get("/similar/b64-2"), 409, "model_not_ready")  # the dropped-out item itself
        serving, versions = models_by_version(client)
        assert (serving, versions["v1"]["state"], versions["v2"]["state"]) == ("v2", "candidate", "serving")

        # writes after a promote still carry every active version
        assert client.post("/items", json={"item_id": "new-5", "image_base64": b64(photo(5))}).status_code == 201
        assert client.get("/similar/new-5", params={"model_version": "v1"}).json()["model_version"] == "v1"
        assert client.get("/similar/new-5").json()["model_version"] == "v2"

        # roll back: promote v1 again (fully covered, no force needed)
        back = client.post("/models/v1/promote")
        assert back.status_code == 200, back.text
        assert back.json() == {"serving": "v1", "previous": "v2", "coverage": 1.0, "items_missing": 0}
        assert client.get("/similar/b64-2").json()["model_version"] == "v1"

        # retire: never the serving one; unknown versions are 404
        assert_error(client.delete("/models/v1"), 409, "model_serving")
        assert_error(client.delete("/models/v9"), 404, "model_not_found")
        assert_error(client.post("/models/v9/promote"), 404, "model_not_found")
        retired = client.delete("/models/v2")
        assert retired.status_code == 200, retired.text
        assert retired.json() == {"model_version": "v2", "state": "retired"}
        _, versions = models_by_version(client)
        assert versions["v2"]["state"] == "retired"
        assert_error(client.get("/similar/new-4", params={"model_version": "v2"}), 404, "model_not_found")
        assert_error(client.post("/models/v2/promote"), 404, "model_not_found")
        assert_error(client.delete("/models/v2"), 404, "model_not_found")
        # writes go on with the versions still active
        assert client.post("/items", json={"item_id": "new-6", "image_base64": b64(photo(6))}).status_code == 201
        assert client.get("/similar/new-6").json()["model_version"] == "v1"
        assert client.get("/items/new-6").status_code == 200


def test_models_admin_needs_the_write_key_and_the_listing_does_not(catalog: Catalog) -> None:
    with catalog.app(catalog.models.v1, api_key="sesame") as client:
        assert_error(client.post("/models/v1/promote"), 401, "unauthorized")
        assert_error(client.delete("/models/v1"), 401, "unauthorized")
        answer = client.get("/models")  # a read, like GET /similar: the web page shows it without a key
        assert answer.status_code == 200
        assert answer.json()["serving"] == "v1"
        assert client.post("/models/v1/promote", headers={"Authorization": "Bearer sesame"}).status_code == 200


def kept_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_kept_image_bytes(catalog: Catalog, images: ImageServer) -> None:
    root = catalog.settings.image_store_dir()
    jpeg, png = photo(11), photo(12, fmt="PNG")
    with catalog.app(catalog.models.v1) as client:
        assert client.post("/items", json={"item_id": "a", "image_base64": b64(jpeg), "title": "x"}).status_code == 201
        answer = client.get("/items/a/image")
        assert answer.status_code == 200
        assert answer.content == jpeg
        assert answer.headers["content-type"] == "image/jpeg"
        assert answer.headers["cache-control"] == "no-cache"
        etag = answer.headers["etag"]
        assert etag.startswith('"') and len(etag) > 2
        assert [p.read_bytes() for p in kept_files(root)] == [jpeg]
        assert client.get("/items/a/image", headers={"If-None-Match": etag}).status_code == 304
        assert client.get("/items/a/image", headers={"If-None-Match": '"other"'}).status_code == 200

        # a patch keeps the image and its ETag
        assert client.patch("/items/a", json={"title": "y"}).status_code == 200
        assert client.get("/items/a/image").headers["etag"] == etag

        # replaced with other bytes: new ETag, the old file is gone
        files = {"image": ("p.png", png, "image/png")}
        assert client.post("/items", data={"item_id": "a"}, files=files).status_code == 200
        answer = client.get("/items/a/image")
        assert (answer.content, answer.headers["content-type"]) == (png, "image/png")
        assert answer.headers["etag"] != etag
        assert client.get("/items/a/image", headers={"If-None-Match": etag}).status_code == 200
        assert [p.read_bytes() for p in kept_files(root)] == [png]

        # replaced from a URL: a redirect, and no bytes are kept any more
        url = images.add("/a.jpg", jpeg)
        assert client.post("/items", json={"item_id": "a", "image_url": url}).status_code == 200
        redirect = client.get("/items/a/image", follow_redirects=False)
        assert (redirect.status_code, redirect.headers["location"]) == (307, url)
        assert kept_files(root) == []

        # deleting an item deletes its kept bytes
        assert client.post("/items", json={"item_id": "b", "image_base64": b64(jpeg)}).status_code == 201
        assert len(kept_files(root)) == 1
        assert client.delete("/items/b").status_code == 204
        assert kept_files(root) == []
        assert_error(client.get("/items/b/image"), 404, "item_not_found")
        assert_error(client.get("/items/nobody/image"), 404, "item_not_found")

        # the kept file is gone (a volume restored without it): 404 image_not_found, not a 500
        assert client.post("/items", json={"item_id": "c", "image_base64": b64(jpeg)}).status_code == 201
        (lost,) = kept_files(root)
        lost.unlink()
        assert_error(client.get("/items/c/image"), 404, "image_not_found")


def test_failed_write_keeps_no_image(catalog: Catalog) -> None:
    root = catalog.settings.image_store_dir()
    with catalog.app(catalog.models.v1) as client:
        assert_error(
            client.post("/items", json={"item_id": "x", "image_base64": b64(b"not an image")}),
            415,
            "unsupported_image_type",
        )
        assert kept_files(root) == []
        assert_error(client.get("/items/x/image"), 404, "item_not_found")


def test_two_files_of_one_version_are_refused(two_models: TwoModels, tmp_path: Path) -> None:
    copy = tmp_path / "copy-of-v1.onnx"
    copy.write_bytes(two_models.v1_path.read_bytes())
    with pytest.raises(EncoderError, match=r"same model_version 'v1'.*v1\.onnx.*copy-of-v1\.onnx"):
        ModelSet.load([two_models.v1_path, copy], "cpu", 0)

    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    clean.update(
        {
            "LOOKALIKE_MODEL_PATH": f"{two_models.v1_path},{copy}",
            "LOOKALIKE_QDRANT_PATH": str(tmp_path / "q"),
            "LOOKALIKE_DEVICE": "cpu",
        }
    )
    result = run_process(
        [sys.executable, "-m", "app"], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2
    assert "same model_version 'v1'" in result.stderr
    assert str(copy) in result.stderr and str(two_models.v1_path) in result.stderr


def test_several_files_are_never_exported(tmp_path: Path, two_models: TwoModels) -> None:
    missing = tmp_path / "v3.onnx"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    clean.update(
        {"LOOKALIKE_MODEL_PATH": f"{two_models.v1_path},{missing}", "LOOKALIKE_QDRANT_PATH": str(tmp_path / "q")}
    )
    result = run_process(
        [sys.executable, "-m", "app"], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert "exporting" not in result.stderr
    assert not missing.exists()


def test_models_command_line(two_models: TwoModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from app.cli import main

    for name in [k for k in os.environ if k.startswith("LOOKALIKE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LOOKALIKE_MODEL_PATH", f"{two_models.v1_path},{two_models.v2_path}")
    monkeypatch.setenv("LOOKALIKE_QDRANT_PATH", str(tmp_path / "q"))
    monkeypatch.setenv("LOOKALIKE_DEVICE", "cpu")

    def run(*argv: str) -> tuple[int, dict[str, object]]:
        code = main(["models", *argv])
        return code, json.loads(capsys.readouterr().out)

    code, listed = run("list")
    assert code == 0
    assert listed["serving"] == "v1"
    assert [(v["model_version"], v["state"]) for v in listed["versions"]] == [("v1", "serving"), ("v2", "candidate")]
    assert run("promote", "v2") == (0, {"serving": "v2", "previous": "v1", "coverage": 1.0, "items_missing": 0})
    code, refused = run("retire", "v2")
    assert (code, refused["error"]["code"]) == (1, "model_serving")
    assert run("retire", "v1") == (0, {"model_version": "v1", "state": "retired"})
    code, listed = run("list")
    assert [(v["model_version"], v["state"]) for v in listed["versions"]] == [("v1", "retired"), ("v2", "serving")]


def test_models_command_line_through_a_running_service(two_models: TwoModels, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """`python -m app` with two model files, driven by `lookalike models ... --url` with the write key."""
    import json

    import httpx

    from app.cli import main
    from tests.live import live_server

    env = {
        "LOOKALIKE_MODEL_PATH": f"{two_models.v1_path},{two_models.v2_path}",
        "LOOKALIKE_QDRANT_PATH": str(tmp_path / "q"),
        "LOOKALIKE_DEVICE": "cpu",
        "LOOKALIKE_API_KEY": "sesame",
    }
    with live_server(env) as server:
        auth = {"Authorization": "Bearer sesame"}
        body = {"item_id": "a", "image_base64": b64(photo(1))}
        assert httpx.post(server.url + "/items", json=body, headers=auth, timeout=30).status_code == 201

        def run(*argv: str) -> tuple[int, dict[str, object]]:
            code = main(["models", *argv, "--url", server.url, "--api-key", "sesame"])
            return code, json.loads(capsys.readouterr().out)

        code, listed = run("list")
        assert (code, listed["serving"]) == (0, "v1")
        assert [v["coverage"] for v in listed["versions"]] == [1.0, 1.0]  # the write carried both vectors
        assert run("promote", "v2") == (0, {"serving": "v2", "previous": "v1", "coverage": 1.0, "items_missing": 0})
        assert httpx.get(server.url + "/similar/a", timeout=30).json()["model_version"] == "v2"
        assert main(["similar", "a", "--url", server.url, "--model-version", "v1"]) == 0
        assert json.loads(capsys.readouterr().out)["model_version"] == "v1"
        code, refused = run("retire", "v2")
        assert (code, refused["error"]["code"]) == (1, "model_serving")
        assert main(["models", "promote", "v1", "--url", server.url]) == 1  # without the key: 401
        assert json.loads(capsys.readouterr().out)["error"]["code"] == "unauthorized"


def test_an_image_store_that_cannot_write_answers_503_and_stores_nothing(catalog: Catalog, tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_bytes(b"")  # the image store's root is a file: every put fails
    with catalog.app(catalog.models.v1, image_store_path=blocked) as client:
        assert_error(
            client.post("/items", json={"item_id": "x", "image_base64": b64(photo(1))}), 503, "store_unavailable"
        )
        assert_error(client.get("/items/x"), 404, "item_not_found")
