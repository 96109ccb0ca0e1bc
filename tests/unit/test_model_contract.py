"""app/core/model_contract.py without an exported SigLIP: metadata, resample names, and small hand-built graphs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from app.core.model_contract import (
    INPUT_NAME,
    OUTPUT_NAME,
    ModelContractError,
    ModelMetadata,
    read_model_file,
    resample_name,
)
from app.encode.encoder import EncoderError, OnnxImageEncoder
from tests.live import run_process

ROOT = Path(__file__).resolve().parents[2]
SIZE = 4

META = ModelMetadata(
    model_version="test-v1",
    source="config:test",
    image_size=SIZE,
    resample="bicubic",
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.5, 1.0),
    embedding_dim=3,
    precision="fp32",
)


def write_model(
    path: Path,
    props: dict[str, str] | None = None,
    *,
    input_type: int = TensorProto.UINT8,
    output_name: str = OUTPUT_NAME,
    size: int = SIZE,
) -> Path:
    """A real ONNX model with the contract's shape: [N, size, size, 3] pixels -> [N, 3] (channel means)."""
    cast = helper.make_node("Cast", [INPUT_NAME], ["x"], to=TensorProto.FLOAT)
    mean = helper.make_node("ReduceMean", ["x"], [output_name], axes=[1, 2], keepdims=0)
    graph = helper.make_graph(
        [cast, mean],
        "contract-test",
        [helper.make_tensor_value_info(INPUT_NAME, input_type, ["N", size, size, 3])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(model, META.to_props() if props is None else props)
    onnx.save_model(model, str(path))
    return path


# --------------------------------------------------------------------------- metadata


def test_metadata_round_trips_through_props() -> None:
    props = META.to_props()
    assert props == {
        "lookalike.model_version": "test-v1",
        "lookalike.source": "config:test",
        "lookalike.image_size": "4",
        "lookalike.resample": "bicubic",
        "lookalike.mean": "[0.5, 0.5, 0.5]",
        "lookalike.std": "[0.25, 0.5, 1.0]",
        "lookalike.embedding_dim": "3",
        "lookalike.precision": "fp32",
    }
    assert ModelMetadata.from_props(props) == META


def test_older_models_without_source_resample_precision_get_the_defaults() -> None:
    props = {k: v for k, v in META.to_props().items() if k.endswith(("version", "image_size", "mean", "std", "dim"))}
    meta = ModelMetadata.from_props(props)
    assert (meta.source, meta.resample, meta.precision) == ("unknown", "bicubic", "fp32")


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("lookalike.model_version", None, "lookalike.model_version"),
        ("lookalike.image_size", "big", "big"),
        ("lookalike.image_size", "0", "must be positive"),
        ("lookalike.embedding_dim", "-3", "must be positive"),
        ("lookalike.resample", "sinc", "'sinc' is not one of"),
        ("lookalike.mean", "[0.5, 0.5]", "lookalike.mean"),
        ("lookalike.mean", '"0.5"', "lookalike.mean"),
        ("lookalike.std", "[0.5, NaN, 0.5]", "lookalike.std"),
        ("lookalike.std", "[0.5, 0, 0.5]", "lookalike.std has a zero"),
        ("lookalike.std", "not json", "Expecting value"),
    ],
)
def test_missing_or_bad_metadata_is_refused_naming_the_problem(key: str, value: str | None, named: str) -> None:
    props = META.to_props()
    if value is None:
        del props[key]
    else:
        props[key] = value
    with pytest.raises(ModelContractError, match=r"model\.onnx is not a lookalike model") as caught:
        ModelMetadata.from_props(props, "model.onnx")
    assert named in str(caught.value)


@pytest.mark.parametrize(("value", "name"), [(0, "nearest"), (2, "bilinear"), (3, "bicubic"), ("1", "lanczos")])
def test_resample_name_of_pillow_filter_numbers(value: int, name: str) -> None:
    assert resample_name(value) == name


@pytest.mark.parametrize("value", [99, None, "bicubic"])
def test_resample_name_refuses_what_is_not_a_pillow_filter(value: object) -> None:
    with pytest.raises(ValueError, match="not one of the Pillow filters"):
        resample_name(value)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- model files


def test_a_model_that_follows_the_contract_reads_back_its_metadata(tmp_path: Path) -> None:
    assert read_model_file(write_model(tmp_path / "m.onnx")) == META


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"input_type": TensorProto.FLOAT}, "found pixels tensor(float)"),
        ({"output_name": "embedding"}, "embedding tensor(float)"),
        ({"size": 8}, "`pixels` has shape ['N', 8, 8, 3], metadata says 4px"),
    ],
)
def test_io_that_breaks_the_contract_is_refused(tmp_path: Path, change: dict, problem: str) -> None:
    path = write_model(tmp_path / "m.onnx", **change)
    with pytest.raises(ModelContractError, match="does not follow the model contract") as caught:
        read_model_file(path)
    assert problem in str(caught.value)


def test_embedding_width_must_match_the_metadata(tmp_path: Path) -> None:
    props = META.to_props() | {"lookalike.embedding_dim": "768"}
    with pytest.raises(ModelContractError, match=r"`image_embedding` has shape \['N', 3\], metadata says 768 dims"):
        read_model_file(write_model(tmp_path / "m.onnx", props))


def test_onnx_model_without_lookalike_metadata_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelContractError, match=r"is not a lookalike model.*lookalike\.model_version"):
        read_model_file(write_model(tmp_path / "m.onnx", {"author": "someone"}))


def test_missing_file_and_a_file_that_is_not_onnx_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelContractError, match="does not exist"):
        read_model_file(tmp_path / "nowhere.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"definitely not onnx")
    with pytest.raises(ModelContractError, match="could not load"):
        read_model_file(junk)


# --------------------------------------------------------------------------- the encoder applies it


def test_encoder_loads_a_contract_model_and_runs_it(tmp_path: Path) -> None:
    encoder = OnnxImageEncoder(write_model(tmp_path / "m.onnx"), device="cpu")
    assert encoder.meta == META
    pixels = np.arange(2 * SIZE * SIZE * 3, dtype=np.uint8).reshape(2, SIZE, SIZE, 3)
    np.testing.assert_allclose(encoder.embed(pixels), pixels.astype(np.float32).mean(axis=(1, 2)))


def test_encoder_refuses_a_model_that_breaks_the_contract_with_the_way_out(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.onnx", META.to_props() | {"lookalike.resample": "sinc"})
    with pytest.raises(EncoderError, match=r"'sinc' is not one of.*python -m models\.export --checkpoint"):
        OnnxImageEncoder(path, device="cpu")


def test_the_contract_module_imports_no_runtime_or_training_library() -> None:
    code = (
        "import sys, app.core.model_contract; "
        "print(sorted(m for m in ('onnxruntime', 'onnx', 'torch', 'transformers') if m in sys.modules))"
    )
    result = run_process([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
