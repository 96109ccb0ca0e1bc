"""models.finetune: the sigmoid loss by hand, resume, and catalog -> fine-tune -> export -> evaluate -> serve.

The end-to-end part is real: a generated catalog, the tiny SigLIP trained on CPU, exported by
models.export (parity gate included), ranked by models.evaluate through the service's own decoding and
ONNX encoder, then loaded by the service, which answers GET /similar.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file

from app.core.settings import Settings
from app.http.app import create_app
from models import catalog, evaluate, finetune
from models.export import export_model

E2E_ITEMS = 200
E2E_STEPS = 300


def test_sigmoid_loss_matches_hand_computation() -> None:
    # Two images, two titles; t' = log 10 and b = -10 (SigLIP's init).
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # cos = [[1, .6], [0, .8]] -> logits 10*cos - 10 = [[0, -4], [-10, -2]]; z = +1 on the diagonal, -1 off.
    # loss = -(1/2) [log s(0) + log s(4) + log s(10) + log s(-2)], s = sigmoid, -log s(x) = log(1 + e^-x).
    expected = 0.5 * (math.log(2) + math.log1p(math.exp(-4)) + math.log1p(math.exp(-10)) + math.log1p(math.exp(2)))
    scale, bias = torch.tensor([math.log(10.0)]), torch.tensor([-10.0])
    assert finetune.sigmoid_loss(img, txt, scale, bias).item() == pytest.approx(expected, rel=1e-6)
    # Pairs that share a title are positives too: with image 2 also matching title 1, only z_21 flips.
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    expected_multi = expected + 0.5 * (math.log1p(math.exp(10)) - math.log1p(math.exp(-10)))
    got = finetune.sigmoid_loss(img, txt, scale, bias, labels).item()
    assert got == pytest.approx(expected_multi, rel=1e-6)


def test_sigmoid_loss_matches_transformers_siglip_loss() -> None:
    # Same numbers through HF SiglipModel's own return_loss formula (identity labels).
    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    scale, bias = torch.tensor([1.7]), torch.tensor([-3.0])
    logits_per_text = txt @ img.T * scale.exp() + bias
    m1_diag1 = -torch.ones_like(logits_per_text) + 2 * torch.eye(5)
    reference = -torch.sum(torch.nn.functional.logsigmoid(m1_diag1 * logits_per_text), dim=-1).mean()
    assert finetune.sigmoid_loss(img, txt, scale, bias).item() == pytest.approx(reference.item(), rel=1e-6)


def test_tiny_init_uses_siglip_temperature_and_bias() -> None:
    setup = finetune.build_setup("tiny", ["navy striped tote bag", "red mug"], seed=0)
    assert setup.model.logit_scale.item() == pytest.approx(math.log(10.0))
    assert setup.model.logit_bias.item() == pytest.approx(-10.0)
    ids = setup.tokenizer(["navy mug"], padding="max_length", max_length=setup.text_len)["input_ids"][0]
    assert len(ids) == setup.text_len and setup.tokenizer.unk_token_id not in ids


@dataclass
class Trained:
    data: Path
    checkpoint: Path
    finetuned_onnx: Path
    finetuned_version: str
    untrained_onnx: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("e2e")
    data = root / "catalog"
    catalog.generate(data, E2E_ITEMS, seed=101, progress=False)
    ckpt = root / "ckpt"
    finetune.main(
        [
            "--data",
            str(data),
            "--init",
            "tiny",
            "--out",
            str(ckpt),
            "--max-steps",
            str(E2E_STEPS),
            "--seed",
            "0",
            "--no-progress",
        ]
    )
    # The untrained reference: the same architecture and init, zero steps.
    untrained = root / "untrained"
    finetune.main(
        [
            "--data",
            str(data),
            "--init",
            "tiny",
            "--out",
            str(untrained),
            "--max-steps",
            "0",
            "--seed",
            "0",
            "--no-progress",
        ]
    )
    ft = export_model(root / "tiny-ft.onnx", checkpoint=str(ckpt))
    base = export_model(root / "tiny-untrained.onnx", checkpoint=str(untrained))
    return Trained(data, ckpt, ft.path, ft.model_version, base.path)


def test_checkpoint_is_a_complete_hf_directory(trained: Trained) -> None:
    names = {p.name for p in trained.checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"} <= names
    summary = json.loads((trained.checkpoint / finetune.SUMMARY_FILE).read_text())
    assert summary["steps"] == E2E_STEPS
    log = [json.loads(line) for line in (trained.checkpoint / finetune.LOG_FILE).read_text().splitlines()]
    assert log[-1]["loss_ema"] < log[0]["loss_ema"]  # it learned something


def test_finetuned_beats_untrained_on_held_out_products(trained: Trained) -> None:
    ft, base = str(trained.finetuned_onnx), str(trained.untrained_onnx)
    result = evaluate.evaluate(trained.data, [ft, base], ["colorhist"], device="cpu", progress=False, n_boot=200)
    assert set(result) == {ft, base, "colorhist"}
    assert result[ft]["ndcg@5"] > result[base]["ndcg@5"]
    assert result[base]["relative_to_first"]["ndcg@5"] < 0


def test_finetuned_export_serves_similar(trained: Trained, tmp_path: Path) -> None:
    settings = Settings(model_path=trained.finetuned_onnx, qdrant_path=tmp_path / "qdrant", device="cpu")
    items = [json.loads(line) for line in (trained.data / "items.jsonl").read_text().splitlines()][:12]
    with TestClient(create_app(settings)) as client:
        for it in items:
            body = {k: it[k] for k in ("item_id", "title", "category", "price", "seller_id", "attributes")}
            body["image_base64"] = base64.b64encode((trained.data / it["image"]).read_bytes()).decode()
            response = client.post("/items", json=body)
            assert response.status_code == 201, response.text
        response = client.get(f"/similar/{items[0]['item_id']}", params={"k": 5})
        assert response.status_code == 200, response.text
        body = response.json()
        results = body["results"]
        assert len(results) == 5 and items[0]["item_id"] not in {r["item_id"] for r in results}
        assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
        assert body["model_version"] == trained.finetuned_version


def test_resume_continues_to_the_same_weights(trained: Trained, tmp_path: Path) -> None:
    common = [
        "--data",
        str(trained.data),
        "--init",
        "tiny",
        "--max-steps",
        "6",
        "--batch-size",
        "8",
        "--seed",
        "3",
        "--no-progress",
        "--save-every",
        "2",
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    finetune.main([*common, "--out", str(straight)])
    finetune.main([*common, "--out", str(resumed), "--stop-after", "3"])
    assert json.loads((resumed / finetune.SUMMARY_FILE).read_text())["steps"] == 3
    with pytest.raises(SystemExit, match="--resume"):
        finetune.main([*common, "--out", str(resumed)])
    finetune.main([*common, "--out", str(resumed), "--resume"])
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def test_lora_trains_adapters_and_saves_a_plain_checkpoint(trained: Trained, tmp_path: Path) -> None:
    out = tmp_path / "lora"
    finetune.main(
        [
            "--data",
            str(trained.data),
            "--init",
            str(trained.checkpoint),
            "--out",
            str(out),
            "--lora",
            "--max-steps",
            "3",
            "--batch-size",
            "8",
            "--lr",
            "1e-2",
            "--no-progress",
        ]
    )
    before, after = load_file(trained.checkpoint / "model.safetensors"), load_file(out / "model.safetensors")
    assert after.keys() == before.keys()  # adapters merged: a plain SiglipModel checkpoint
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any("q_proj.weight" in k for k in changed)
    assert not any("mlp" in k or "layer_norm" in k or "embeddings" in k for k in changed)  # frozen
    export_model(tmp_path / "lora.onnx", checkpoint=str(out))  # the export takes it as is
