"""The exported graph: uint8 NHWC pixels -> L2-normalised pooled embedding, written by the dynamo exporter,
quantised for int8, and stamped with the model contract's metadata."""

from __future__ import annotations

import time
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from app.core.model_contract import INPUT_NAME, OUTPUT_NAME
from models.attention_fusion import fuse_attention
from models.export_source import Preprocessing, log, quiet


class PixelsToEmbedding(nn.Module):
    """uint8 NHWC pixels -> L2-normalised pooled embedding, all inside the graph."""

    def __init__(self, tower: nn.Module, prep: Preprocessing, compute_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.tower = tower
        self.compute_dtype = compute_dtype
        self.register_buffer("mean", torch.tensor(prep.mean, dtype=torch.float32).view(1, 1, 1, 3))
        self.register_buffer("std", torch.tensor(prep.std, dtype=torch.float32).view(1, 1, 1, 3))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 even for fp16 towers: it is cheap and keeps the input exact.
        x = pixels.to(torch.float32) * (1.0 / 255.0)
        x = (x - self.mean) / self.std
        x = x.permute(0, 3, 1, 2).to(self.compute_dtype)
        pooled = self.tower(pixel_values=x).pooler_output  # SigLIP's attention-pooling head
        # L2 norm in float32: squaring fp16 activations can overflow.
        return F.normalize(pooled.to(torch.float32), dim=-1)


def export_onnx(wrapper: nn.Module, path: Path, image_size: int) -> None:
    log.info("exporting to ONNX (torch.onnx dynamo exporter) ...")
    started = time.monotonic()
    # Batch of 2: a batch-1 example would pin N=1 in the dynamo exporter.
    example = torch.randint(0, 256, (2, image_size, image_size, 3), dtype=torch.uint8)
    with quiet(), torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    assert program is not None
    onnx.save_model(program.model_proto, str(path))
    log.info("exported in %.1f s", time.monotonic() - started)


def quantize_int8(fp32_path: Path, out: Path, num_heads: int, hidden_size: int) -> None:
    """fp32 ONNX -> fused attention -> constant folding -> dynamic int8 (MatMul/Gemm weights, per channel).

    Measured on SigLIP-B/16, side by side (BENCHMARKS.md "Encoder"): fusing attention into ORT's
    MultiHeadAttention kernel and constant-folding the pooling head's split in-projection (so its
    weights are initializers and get quantised too) makes int8 faster at the same cosine. The fp32
    graph gains nothing from the same fusion, so fp32 stays plain ONNX. QUInt8 weights are much slower
    (no U8U8 VNNI path), per-tensor weights and quantising the attention's activation x activation
    MatMuls gain nothing, QAttention (packed QKV, 7-bit weights) is no faster than MultiHeadAttention,
    and onnxruntime.transformers' optimizer (vit/clip) fuses no attention in this exporter's graph
    (only LayerNorm and BiasGelu).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    log.info("quantising weights to int8 (fused attention, dynamic, MatMul/Gemm, per channel) ...")
    started = time.monotonic()
    model = onnx.load_model(str(fp32_path))
    fused = fuse_attention(model, num_heads, hidden_size // num_heads)
    if fused == 0:  # still correct (the gate decides), only slower: say so rather than fail
        log.warning("no attention block matched the fusion pattern; quantising the unfused graph")
    fused_path, folded_path = fp32_path.with_name("fused.onnx"), fp32_path.with_name("folded.onnx")
    onnx.save_model(model, str(fused_path))
    with quiet():
        # ORT's basic graph optimisations (constant folding) on the CPU; symbolic shape inference
        # cannot follow the exporter's dynamic Expand, and nothing here needs it.
        quant_pre_process(str(fused_path), str(folded_path), skip_symbolic_shape=True)
        quantize_dynamic(
            folded_path,
            out,
            weight_type=QuantType.QInt8,  # U8S8: the VNNI / AVX-512 kernels
            per_channel=True,
            op_types_to_quantize=["MatMul", "Gemm"],
        )
    log.info("quantised in %.1f s (%d attention blocks fused)", time.monotonic() - started, fused)


def write_metadata(path: Path, metadata: dict[str, str]) -> None:
    model = onnx.load_model(str(path))
    props = {p.key: p.value for p in model.metadata_props} | metadata
    onnx.helper.set_model_props(model, props)
    model.producer_name = "lookalike.models.export"
    onnx.save_model(model, str(path))
