"""models.evaluate end to end on a small catalog (the metrics against hand-computed values: tests/unit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models import catalog, evaluate
from models.listing_aggregates import AGGREGATES, DEFAULT_AGGREGATE


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


@pytest.fixture(scope="module")
def listing_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval-listings")
    # Two shops with a size chart on every listing; 64 listings of 2-3 listings per product.
    listings = catalog.Listings(photos=(1, 4), per_product=(2, 3), size_chart_sellers=2)
    catalog.generate(out, 64, seed=21, size=64, progress=False, listings=listings)
    return out


def _listings_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert evaluate.main([*args, "--listings", "--json", "--no-progress", "--device", "cpu", "--bootstrap", "100"]) == 0
    return json.loads(capsys.readouterr().out)


def test_listings_all_photos_vs_cover_and_the_boilerplate_rule(
    listing_catalog: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(tiny_model_path)
    # A cosine only the same picture reaches: the charts (same bytes or re-encoded copies) and nothing else.
    # The best pair, where one shared chart decides a whole listing score, shows the rule's effect plainly.
    args = ("--data", str(listing_catalog), "--model", model, "--boilerplate-min-cosine", "0.999")
    result = _listings_json(capsys, *args, "--aggregate", "best_pair")
    r = result[model]
    assert list(result) == [model] and r["queries"] > 0 and r["aggregate"] == "best_pair"
    assert r["aggregates"]["best_pair"] == r["all_photos"] and set(r["aggregates"]) == set(AGGREGATES)
    for system in ("cover_only", "all_photos", "all_photos_without_rule"):
        for m in ("ndcg@5", "precision@1", "recall@10"):
            lo, hi = r[system]["ci95"][m]
            assert 0.0 <= lo <= r[system][m] <= hi <= 1.0
    assert "relative_to_cover" in r["all_photos"] and "relative_to_cover" not in r["cover_only"]
    b = r["boilerplate"]
    assert b["size_chart_photos"] > 0 and b["size_charts_marked"] > 0 and b["chart_queries"] > 0
    top5 = b["top5"]
    # Without the rule, a shop's shared chart pulls its other products into the look-alikes; the rule takes it out.
    assert (
        top5["all_photos_without_rule"]["same_seller_other_product"] > top5["all_photos"]["same_seller_other_product"]
    )
    copies = r["cosines"]["size_chart_copies"]
    assert copies["pairs"] > 0 and copies["p100"] == pytest.approx(1.0, abs=1e-5)  # identical bytes, cosine 1
    assert r["cosines"]["different_products"]["p0"] < copies["p0"]
    default = _listings_json(capsys, *args)[model]
    assert default["aggregate"] == DEFAULT_AGGREGATE and default["all_photos"] == r["aggregates"][DEFAULT_AGGREGATE]


def test_listings_rule_needs_more_listings_than_a_shop_has(
    listing_catalog: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(tiny_model_path)
    args = ("--data", str(listing_catalog), "--model", model, "--boilerplate-min-cosine", "0.999")
    r = _listings_json(capsys, *args, "--boilerplate-min-listings", "64")[model]
    assert r["boilerplate"]["marked_photos"] == 0
    assert r["all_photos"]["ndcg@5"] == r["all_photos_without_rule"]["ndcg@5"]


def test_listings_needs_a_multi_photo_catalog(small_catalog: Path, tiny_model_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"listings\.jsonl"):
        evaluate.main(["--data", str(small_catalog), "--model", str(tiny_model_path), "--listings", "--no-progress"])
    with pytest.raises(SystemExit):  # --listings compares models' photos; baselines have no place there
        evaluate.main(["--data", str(small_catalog), "--baseline", "colorhist", "--listings"])
