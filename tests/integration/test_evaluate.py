"""models.evaluate end to end on a small catalog (the metrics against hand-computed values: tests/unit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models import catalog, evaluate


@pytest.fixture(scope="module")
def small_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval-catalog")
    catalog.generate(out, 48, seed=21, size=96, progress=False)
    return out


def test_evaluate_json_keys_follow_the_arguments(
    small_catalog: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(tiny_model_path)
    pca = f"pca128:{model}"
    rc = evaluate.main(
        [
            "--data",
            str(small_catalog),
            "--model",
            model,
            "--baseline",
            "colorhist",
            "--baseline",
            pca,
            "--json",
            "--no-progress",
            "--device",
            "cpu",
            "--bootstrap",
            "200",
        ]
    )
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result) == [model, "colorhist", pca]
    for entry in result.values():
        for m in ("ndcg@5", "precision@1", "recall@10"):
            assert 0.0 <= entry[m] <= 1.0
            lo, hi = entry["ci95"][m]
            assert lo <= entry[m] <= hi
        assert entry["queries"] > 0
    assert result[model]["relative_to_first"] == {"ndcg@5": 0.0, "precision@1": 0.0, "recall@10": 0.0}


def test_evaluate_table_and_bad_baseline(
    small_catalog: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        evaluate.main(
            [
                "--data",
                str(small_catalog),
                "--model",
                str(tiny_model_path),
                "--no-progress",
                "--device",
                "cpu",
                "--bootstrap",
                "100",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "ndcg@5" in table and "queries" in table
    with pytest.raises(SystemExit, match="unknown baseline"):
        evaluate.evaluate(small_catalog, [str(tiny_model_path)], ["sift"], device="cpu", progress=False)
