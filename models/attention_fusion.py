"""Fuse the exporter's decomposed self-attention into ONNX Runtime's MultiHeadAttention (int8 export).

torch.onnx's dynamo exporter writes SigLIP's attention as MatMul/Softmax/MatMul with head-split
reshapes and transposes; ONNX Runtime's transformers optimizer does not recognise that graph, so the
int8 export (models.export) fuses it here before quantising. Measured gain and the alternatives tried
are in models.export_graph.quantize_int8's docstring and BENCHMARKS.md.
"""

from __future__ import annotations

import numpy as np
import onnx

# The exporter's decomposed scaled-dot-product attention, walking back from the Q.K^T MatMul's
# inputs (and the A.V MatMul's second input) to the [N, S, hidden] projection outputs: (op, perm).
_Q_PATH = (("Mul", None), ("Transpose", [0, 2, 1, 3]), ("Reshape", None))
_K_PATH = (
    ("Mul", None),
    ("Reshape", None),
    ("Transpose", [0, 2, 1]),
    ("Reshape", None),
    ("Transpose", [0, 2, 1, 3]),
    ("Reshape", None),
)
_V_PATH = (("Transpose", [0, 2, 1, 3]), ("Reshape", None))


def fuse_attention(model: onnx.ModelProto, num_heads: int, head_dim: int) -> int:
    """Replace each exported self-attention block with one com.microsoft.MultiHeadAttention node.

    Matches Softmax(MatMul(Q*s, K^T*s)) @ V whose Q/K/V come from [N, S, hidden] projections through
    the exact head-split reshapes/transposes above (the final split reshape must be [.., heads,
    head_dim]) and whose scale is head_dim**-0.5; the output [N, S, hidden] replaces the
    heads-merge Transpose. Anything else (the pooling head's single-query attention) is left as is.
    Returns the number of fused blocks; the caller's parity gate checks the result.
    """
    index = _GraphIndex(model.graph, num_heads, head_dim)
    replacements: dict[str, onnx.NodeProto] = {}  # merge Reshape's output -> the node to put before it
    for softmax in [n for n in model.graph.node if n.op_type == "Softmax"]:
        match = index.attention(softmax)
        if match is None:
            continue
        (q, k, v), scale, reshape = match
        out = f"{reshape.output[0]}_attention"
        replacements[reshape.output[0]] = onnx.helper.make_node(
            "MultiHeadAttention",
            [q, k, v],
            [out],
            name=f"MultiHeadAttention_{len(replacements)}",
            domain="com.microsoft",
            num_heads=num_heads,
            scale=scale,
        )
        reshape.input[0] = out  # [N, S, hidden] already: the Reshape stays and is a no-op
    if replacements:
        _splice(model, replacements)
    return len(replacements)


class _GraphIndex:
    """Who produces and who consumes each tensor, and the constant initializers, of one graph."""

    def __init__(self, graph: onnx.GraphProto, num_heads: int, head_dim: int) -> None:
        self.num_heads, self.head_dim = num_heads, head_dim
        self.producer = {name: node for node in graph.node for name in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.constants = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}

    def attention(self, softmax: onnx.NodeProto) -> tuple[tuple[str, str, str], float, onnx.NodeProto] | None:
        """((q, k, v) projection outputs, scale, the heads-merge Reshape) of the block around `softmax`."""
        axis = next((a.i for a in softmax.attribute if a.name == "axis"), -1)
        qk, users = self.producer.get(softmax.input[0]), self.consumers.get(softmax.output[0], [])
        if axis not in (-1, 3) or qk is None or qk.op_type != "MatMul" or len(users) != 1:
            return None
        av = users[0]
        q, k, v = self.walk(qk.input[0], _Q_PATH), self.walk(qk.input[1], _K_PATH), self.walk(av.input[1], _V_PATH)
        merge = self.consumers.get(av.output[0], [])
        if av.op_type != "MatMul" or av.input[0] != softmax.output[0] or q is None or k is None or v is None:
            return None
        if len(merge) != 1 or merge[0].op_type != "Transpose" or _perm(merge[0]) != [0, 2, 1, 3]:
            return None
        reshape = self.consumers.get(merge[0].output[0], [])
        scale = q[1] * k[1]
        if (
            len(reshape) != 1
            or reshape[0].op_type != "Reshape"
            or not np.isclose(scale, self.head_dim**-0.5, rtol=1e-4)
        ):
            return None
        return (q[0], k[0], v[0]), scale, reshape[0]

    def walk(self, name: str, path: tuple[tuple[str, list[int] | None], ...]) -> tuple[str, float] | None:
        """Back from `name` along `path` to a projection output: (its name, the product of the Mul scales)."""
        scale = 1.0
        for i, (op, want_perm) in enumerate(path):
            node = self.producer.get(name)
            users = [u for u in self.consumers.get(name, []) if u.op_type != "Shape"]
            if node is None or node.op_type != op or len(users) != 1:
                return None
            if op == "Mul":
                factor = self.constants.get(node.input[1])
                if factor is None or factor.size != 1:
                    return None
                scale *= float(factor.reshape(()))
            elif op == "Transpose" and _perm(node) != want_perm:
                return None
            elif op == "Reshape" and i == len(path) - 1:  # the head split of the projection
                shape = self.constants.get(node.input[1])
                if shape is None or [int(d) for d in shape[-2:]] != [self.num_heads, self.head_dim]:
                    return None
            name = node.input[0]
        source = self.producer.get(name)
        return (name, scale) if source is not None and source.op_type in ("Add", "MatMul") else None


def _perm(node: onnx.NodeProto) -> list[int] | None:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), None)


def _splice(model: onnx.ModelProto, replacements: dict[str, onnx.NodeProto]) -> None:
    """Put each new node before the Reshape it feeds, then drop what only fed the replaced nodes."""
    graph = model.graph
    nodes = []
    for node in graph.node:  # the new node right before the Reshape it feeds: still topological
        if node.output[0] in replacements:
            nodes.append(replacements[node.output[0]])
        nodes.append(node)
    outputs = {o.name for o in graph.output}
    while True:  # drop what only fed the replaced nodes
        used = outputs | {name for node in nodes for name in node.input}
        alive = [node for node in nodes if any(name in used for name in node.output)]
        if len(alive) == len(nodes):
            break
        nodes = alive
    del graph.node[:]
    graph.node.extend(nodes)
    initializers = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
