"""QuantizeBiasPass: write the int32 bias of each static int8 Gemm / Conv / MatMul + Add.

    Gemm/Conv(DQ(x, sx), DQ(W, sw), b:f32)  ⇒  Gemm/Conv(DQ(x), DQ(W), DQ(round(b / (sx·sw)):int32, sx·sw))
    MatMul(DQ(x, sx), DQ(W, sw)) → Add(·, b:f32)  ⇒  MatMul(...) → Add(·, DQ(b:int32, sx·sw))

Why: the quantizer leaves the bias float (`QuantConfig.quantize_bias=False`), the form
ExecuTorch's XNNPACK partitioner takes, and XNNPACK quantizes it itself. ONNX Runtime's
QDQ fusion wants the int32 bias with scale sx·sw behind a DequantizeLinear (QGemm and
QLinearConv consume exactly that), and so do the explicit-operator passes. Every int8 GEMM
computes with this bias. `pt2e_int8.quantize` / `convert` already put the float bias on this
grid (pt2e_int8/bias_grid.py), so the int32 bias holds the same values and nothing moves; for
a graph converted elsewhere, rounding moves a value before the output's quantize by at most
sx·sw / 2, a small fraction of one output step.

Fires on a layer whose activation is dequantized with a constant scale (static int8) and
whose weight is a dequantized constant, with a float constant bias. Leaves alone dynamic
layers (scale computed at run time), weight-only layers (float activation) and int32 biases.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from backends.onnx.passes._match import (
    add_initializer,
    constant,
    dequantized_input,
    node,
    only_consumer,
)

INT32 = np.iinfo(np.int32)


def _bias_scale(layer: ir.Node) -> np.ndarray | None:
    """sx · sw for a static int8 layer (one value per output channel), or None."""
    act, weight = dequantized_input(layer.inputs[0]), dequantized_input(layer.inputs[1])
    if act is None or weight is None or constant(weight[0]) is None:
        return None
    sx, sw = constant(act[1]), constant(weight[1])
    if sx is None or sw is None or sx.size != 1:
        return None
    return (sx.astype(np.float32).reshape(()) * sw.astype(np.float32)).astype(np.float32)


def _quantized_bias(graph: ir.Graph, layer: ir.Node, bias: ir.Value, scale: np.ndarray) -> ir.Value | None:
    values = constant(bias)
    if values is None or values.dtype != np.float32 or values.ndim != 1:
        return None
    if scale.size not in (1, values.size):
        return None
    q = np.clip(np.round(values / scale), INT32.min, INT32.max).astype(np.int32)
    q_bias = add_initializer(graph, f"{bias.name}_int32", q)
    q_scale = add_initializer(graph, f"{bias.name}_scale", scale.reshape(-1) if scale.size > 1 else scale.reshape(()))
    attrs = {"axis": 0} if scale.size > 1 else {}
    dq = node(graph, "DequantizeLinear", [q_bias, q_scale], name=f"{layer.name}_bias_dq", **attrs)
    dq.outputs[0].type, dq.outputs[0].shape = bias.type, bias.shape
    graph.insert_before(layer, dq)
    return dq.outputs[0]


class QuantizeBiasPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        for layer in [n for n in graph if n.op_type in ("Gemm", "Conv", "MatMul") and n.domain == ""]:
            scale = _bias_scale(layer)
            if scale is None:
                continue
            if layer.op_type == "MatMul":
                add = only_consumer(layer.outputs[0], "Add")
                if add is None:
                    continue
                slot = 1 if add.inputs[0] is layer.outputs[0] else 0
                target, bias = add, add.inputs[slot]
            else:
                if len(layer.inputs) < 3 or layer.inputs[2] is None:
                    continue
                slot, target, bias = 2, layer, layer.inputs[2]
            q_bias = _quantized_bias(graph, target, bias, scale)
            if q_bias is None:
                continue
            target.replace_input_with(slot, q_bias)
            modified = True
        return ir.passes.PassResult(model, modified)
