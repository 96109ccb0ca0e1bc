"""`lookalike index` / `lookalike similar`: in-process and over HTTP; bad lines reported, never fatal."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from app.cli import main
from tests.factories import photo
from tests.live import live_server


def write_catalog(folder: Path) -> Path:
    (folder / "img").mkdir()
    lines = []
    for i in range(6):
        (folder / "img" / f"{i}.jpg").write_bytes(photo(50 + i))
        lines.append(json.dumps({"item_id": f"cat-{i}", "image": f"img/{i}.jpg", "category": "bags", "price": i}))
    lines.insert(2, "{this is not json")
    lines.insert(4, json.dumps({"item_id": "cat-missing", "image": "img/none.jpg"}))
    lines.insert(5, json.dumps({"item_id": "bad id", "image": "img/0.jpg"}))
    lines.append("")
    path = folder / "items.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def env(tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"LOOKALIKE_MODEL_PATH": str(tiny_model_path), "LOOKALIKE_QDRANT_PATH": str(tmp_path / "q")}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


def test_index_in_process_reports_bad_lines_and_keeps_going(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = write_catalog(tmp_path)
    assert main(["index", str(catalog), "--batch-size", "4"]) == 3
    err = capsys.readouterr().err
    assert "line 3 (?): not JSON" in err
    assert "cannot read image" in err
    assert "(bad id): 422 validation_error" in err
    assert "indexed 6 item(s), 3 failed" in err

    assert main(["similar", "cat-0", "--k", "3"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["item_id"] == "cat-0"
    assert len(answer["results"]) == 3
    assert all(r["item_id"].startswith("cat-") and r["item_id"] != "cat-0" for r in answer["results"])

    assert main(["similar", "cat-missing"]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "item_not_found"


def test_index_over_http(tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    catalog = write_catalog(tmp_path)
    with live_server(env) as server:
        assert main(["index", str(catalog), "--url", server.url]) == 3
        assert "indexed 6 item(s), 3 failed" in capsys.readouterr().err
        assert httpx.get(server.url + "/items/cat-5").json()["price"] == 5
        assert main(["similar", "cat-5", "--url", server.url, "--k", "2"]) == 0
        assert len(json.loads(capsys.readouterr().out)["results"]) == 2


def test_images_orphans_lists_and_deletes_the_files_no_item_names(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from app.store.images import ImageStore, image_key

    catalog = write_catalog(tmp_path)
    assert main(["index", str(catalog)]) == 3  # 6 items kept from their bytes
    capsys.readouterr()
    images = ImageStore(Path(env["LOOKALIKE_QDRANT_PATH"]).parent / "images")
    kept = sorted(images.keys())
    assert len(kept) == 6
    # what a crash between the image put and the store write leaves behind
    ghost = image_key("cat-ghost", "0123456789abcdef")
    images.put(ghost, photo(99))

    assert main(["images", "orphans"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert (listed["orphans"], listed["deleted"]) == ([ghost], False)
    assert images.get(ghost) is not None  # listing deletes nothing

    assert main(["images", "orphans", "--delete"]) == 0
    assert json.loads(capsys.readouterr().out)["orphans"] == [ghost]
    assert images.get(ghost) is None
    assert sorted(images.keys()) == kept  # the items' own images stay

    assert main(["images", "orphans"]) == 0
    assert json.loads(capsys.readouterr().out)["orphans"] == []
