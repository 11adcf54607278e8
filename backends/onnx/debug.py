"""Per-layer outputs of a QDQ .onnx in ONNX Runtime, against the PyTorch reference.

    .onnx → find each coverage row's layer node (the exporter names it after the converted-graph
      node) and walk to its output as consumers see it (through the bias add, the fused
      activation and the output QuantizeLinear → DequantizeLinear) → add those tensors as graph
      outputs → run in ONNX Runtime with its default optimizations → compare layer by layer

ONNX Runtime keeps its fused kernels when an intermediate becomes a graph output (it duplicates
the DequantizeLinear: QGemm, QLinearAdd and DynamicQuantizeMatMul stay as they were); the
report says whether the tapped file's kernels match the original's, so a difference cannot hide.
ORT's own `onnxruntime.quantization.qdq_loss_debug` matches tensors by the names its quantizer
gives; files from torch.onnx do not follow them, hence the walk from the named layer nodes.
"""

from __future__ import annotations

import collections
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import onnx
import onnxruntime as ort
import torch
from torch.fx import GraphModule

from backends.onnx.placement import INT8_KERNELS, optimized_graph
from backends.onnx.reference import onnx_reference
from backends.onnx.runtime import load_onnx
from pt2e_int8.capture import as_input_tuple
from pt2e_int8.coverage_report import coverage
from pt2e_int8.debug.artifact import (
    MAX_STEPS,
    ArtifactReport,
    compare_layers,
    reference_values,
    tap_points,
)
from pt2e_int8.errors import InputFileError, UserInputError

# Ops between a layer node and its output that belong to the layer: its fused activation.
_FUSED = frozenset({"Relu", "Clip"})
# Nodes the exporter's rewrites add after a layer node, named "<layer><suffix>"
# (passes/rewrite_dynamic_linear.py, passes/rewrite_linear_as_gemm.py).
_EPILOGUE = ("_cast", "_rescale", "_bias", "_unflatten")
# Int8 ops that move values without changing them, between an output Quantize and its Dequantize.
_MOVES = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten"})


class _Graph:
    def __init__(self, proto: onnx.ModelProto) -> None:
        self.nodes = {n.name: n for n in proto.graph.node}
        self.consumers: dict[str, list] = collections.defaultdict(list)
        for n in proto.graph.node:
            for i in n.input:
                self.consumers[i].append(n)
        self.constants = {i.name for i in proto.graph.initializer} | {
            o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}

    def layer_output(self, layer: onnx.NodeProto) -> str:
        """The tensor a layer's consumers read: after its bias add (or the exporter's rewrite of it,
        named `<layer>_...`), its fused activation and its output QuantizeLinear → DequantizeLinear."""
        tensor = layer.output[0]
        for _ in range(8):
            users = self.consumers.get(tensor, [])
            quant = [u for u in users if u.op_type == "QuantizeLinear"]
            if quant:
                return self._dequantized(quant[0].output[0]) or tensor
            if len(users) != 1:
                return tensor
            user = users[0]
            own = user.name in {layer.name + s for s in _EPILOGUE} or user.op_type in _FUSED or (
                user.op_type == "Add" and any(i in self.constants for i in user.input))
            if not own:
                return tensor
            tensor = user.output[0]
        return tensor


    def _dequantized(self, tensor: str) -> str | None:
        """The DequantizeLinear output an int8 tensor reaches through value-preserving moves."""
        for _ in range(8):
            users = self.consumers.get(tensor, [])
            deq = [u for u in users if u.op_type == "DequantizeLinear"]
            if deq:
                return deq[0].output[0]
            if len(users) != 1 or users[0].op_type not in _MOVES:
                return None
            tensor = users[0].output[0]
        return None


def _kernels(path: Path) -> collections.Counter:
    ops = (n.op_type for n in optimized_graph(path).graph.node)
    return collections.Counter(op for op in ops if op in INT8_KERNELS)


def debug_onnx(
    path: str | os.PathLike,
    model: GraphModule,
    inputs: Iterable,
    *,
    reference: Callable[[GraphModule], torch.nn.Module] | None = onnx_reference,
    max_steps: float = MAX_STEPS,
) -> ArtifactReport:
    """Run `path` in ONNX Runtime with every layer output exposed and compare with `model`.

    Args:
        path: an .onnx written by `export_onnx` from `model`.
        model: the converted GraphModule (ONNX Runtime's dynamic int8 is per tensor, like it).
        inputs: batches (tensor or tuple of tensors each).
        reference: turns `model` into the reference (None: `model` itself). The default
            (`onnx_reference`) computes static int8 layers and QuantizeLinear as ONNX Runtime does.
        max_steps: a layer off by more than this many output steps has diverged.

    Example:
        print(debug_onnx("out/model.onnx", qm, [(x,)]))
    """
    path = Path(path)
    batches = [as_input_tuple(b) for b in inputs]
    if not batches:
        raise UserInputError("debug_onnx needs at least one input batch.")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001  (a damaged file fails in many ways)
        raise InputFileError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e}).") from e
    graph = _Graph(proto)
    rows = coverage(model).layers
    points = {row: node.name for row, node in tap_points(model, rows).items()}
    tensors = {}
    for row in rows:
        layer = graph.nodes.get(row.node)
        if layer is not None and row.name in points:
            tensors[row.name] = graph.layer_output(layer)
    existing = {o.name for o in proto.graph.output}
    for name in dict.fromkeys(tensors.values()):
        if name not in existing:
            proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    notes = [f"{len(tensors)} of {len(points)} layer outputs exposed as ONNX Runtime outputs"]
    with tempfile.TemporaryDirectory() as tmp:
        tapped = Path(tmp) / "tapped.onnx"
        onnx.save(proto, str(tapped))
        same = _kernels(path) == _kernels(tapped)
        notes.append("ONNX Runtime fused the same int8 kernels with the taps" if same else
                     f"the taps changed ONNX Runtime's int8 kernels: {dict(_kernels(path))} -> {dict(_kernels(tapped))}")
        session = load_onnx(tapped)
        names = session.output_names
        taps = []
        for b in batches:
            try:
                outs = session.run(list(b))
            except (ort.capi.onnxruntime_pybind11_state.Fail, ValueError) as e:
                raise InputFileError(f"{path}: ONNX Runtime could not run the inputs ({e}).") from e
            by_name = dict(zip(names, outs, strict=True))
            taps.append({row: torch.as_tensor(by_name[t]) for row, t in tensors.items()})
    ref_model = reference(model) if reference is not None else model
    references = [reference_values(ref_model, points, b) for b in batches]
    name = "onnx_reference(model)" if reference is onnx_reference else "the converted model"
    return compare_layers(f"{path.name} (ONNX Runtime)", rows, model, taps, references,
                          reference_name=name, max_steps=max_steps, notes=notes)
