"""Where each layer really runs in ONNX Runtime: in an int8 kernel, or in float.

Loads the file with every graph optimization on, has ONNX Runtime save the optimized graph,
and looks up each coverage row's node (the passes name linear / conv / matmul nodes after
the PyTorch node) among the kernels ONNX Runtime fused.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
import onnxruntime as ort

# ONNX Runtime ops that compute in int8 (with their domains folded away).
INT8_KERNELS = frozenset({
    "QLinearMatMul", "QGemm", "QLinearConv", "MatMulInteger", "ConvInteger", "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul", "QAttention", "QLinearAdd", "QLinearMul", "DynamicQuantizeLSTM",
    "QLinearSoftmax", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat",
})


def optimized_graph(path: Path) -> onnx.ModelProto:
    """ONNX Runtime's fully optimized graph of `path` on this CPU."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(out)
        so.log_severity_level = 3  # the "hardware specific optimizations" notice is expected here
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return onnx.load(str(out))


def _owner(node_name: str, layer_nodes: set[str]) -> str | None:
    """The layer node a (possibly fused and renamed) ONNX Runtime node came from.

    ONNX Runtime keeps the name of the node it fused around and adds to it: "fused linear",
    "linear_1_quant", "linear_1/MatMulIntegerToFloat". `linear_1_quant` belongs to `linear_1`,
    not to `linear` (a digit after the separator continues a name).
    """
    name = node_name.removeprefix("fused ")
    if name in layer_nodes:
        return name
    best = [n for n in layer_nodes if name.startswith(n) and name[len(n):len(n) + 1] in ("_", "/", " ")
            and not name[len(n) + 1:len(n) + 2].isdigit()]
    return max(best, key=len) if best else None


def place_layers(path: Path, layers: Sequence, notes: Mapping[str, str] | None = None
                 ) -> tuple[dict[str, str], dict[str, str]]:
    """(placement, detail) for coverage rows `layers` in the ONNX file at `path`.

    `notes` maps layer node names the exporter deliberately left in float to the reason, which
    becomes the detail of those rows when ONNX Runtime indeed runs them in float.
    """
    notes = notes or {}
    graph = optimized_graph(path).graph
    # A row is several nodes when a transform unrolled one weight over time steps.
    layer_nodes = {n for row in layers for n in (row.nodes or (row.node,))}
    found: dict[str, str] = {}
    for node in graph.node:
        owner = _owner(node.name, layer_nodes)
        if owner is None:
            continue
        if node.op_type in INT8_KERNELS or owner not in found:
            found[owner] = node.op_type if not node.domain else f"{node.domain}.{node.op_type}"
    placement, detail = {}, {}
    for row in layers:
        ops = [found.get(n) for n in (row.nodes or (row.node,))]
        int8 = all(o is not None and o.rsplit(".", 1)[-1] in INT8_KERNELS for o in ops)
        op = next((o for o in ops if o is None or o.rsplit(".", 1)[-1] not in INT8_KERNELS), ops[0])
        if int8:
            placement[row.name], detail[row.name] = "int8", op
        else:
            placement[row.name] = "float"
            why = row.reason if not row.quantized else notes.get(row.node) or f"ONNX Runtime runs it as float {op or 'ops'}"
            if row.scheme and row.scheme.startswith("weight-only"):
                why = f"weight-only: int8 weights dequantized, float {op or 'MatMul'}"
            detail[row.name] = why or "float"
    return placement, detail
