"""RewriteDynamicLinearPass: dynamic int8 linears in the form ONNX Runtime fuses into DynamicQuantizeMatMul.

    DQL(x) → DQ(y, s, z) → Gemm/MatMul(·, DQ(W, sw, zw)) [+ bias]
      ⇒  DQL(x) → MatMulInteger(y, W[K,N], z, zw) → Cast(float) → Mul(·, s · sw) [→ Add(bias)]

ONNX Runtime has no QDQ rule for DynamicQuantizeLinear → DequantizeLinear → Gemm: left as is,
it dequantizes and runs a float Gemm. The MatMulInteger form is what its own quantize_dynamic
writes; ONNX Runtime fuses it (MatMulIntegerToFloat, then DynamicQuantizeMatMul with the
DynamicQuantizeLinear). Fires when input 0 of a Gemm (transA=0, alpha=beta=1) or MatMul is
dequantized from a DynamicQuantizeLinear and input 1 is a dequantized 2-D constant; Gemm's
transB is folded into the stored weight. The new MatMulInteger keeps the layer's node name.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from backends.onnx.passes._match import (
    add_initializer,
    attr,
    constant,
    node,
    producer,
    replace_value,
)


def _match(layer: ir.Node):
    act_dq, w_dq = producer(layer.inputs[0], "DequantizeLinear"), producer(layer.inputs[1], "DequantizeLinear")
    if act_dq is None or w_dq is None or producer(act_dq.inputs[0], "DynamicQuantizeLinear") is None:
        return None
    weight = constant(w_dq.inputs[0])
    if weight is None or weight.ndim != 2:
        return None
    if layer.op_type == "Gemm" and (attr(layer, "transA", 0) or attr(layer, "alpha", 1.0) != 1.0
                                    or attr(layer, "beta", 1.0) != 1.0):
        return None
    return act_dq, w_dq, weight


class RewriteDynamicLinearPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        for layer in [n for n in graph if n.op_type in ("Gemm", "MatMul") and n.domain == ""]:
            found = _match(layer)
            if found is not None:
                self._rewrite(graph, layer, *found)
                modified = True
        return ir.passes.PassResult(model, modified)

    @staticmethod
    def _rewrite(graph: ir.Graph, layer: ir.Node, act_dq: ir.Node, w_dq: ir.Node, weight: np.ndarray) -> None:
        transposed = layer.op_type == "Gemm" and attr(layer, "transB", 0)
        w_value, w_scale = w_dq.inputs[0], w_dq.inputs[1]
        w_zp = w_dq.inputs[2] if len(w_dq.inputs) > 2 else None
        if transposed:
            w_value = add_initializer(graph, f"{w_value.name}_t", np.ascontiguousarray(weight.T))
        y, scale, zero_point = act_dq.inputs[0], act_dq.inputs[1], act_dq.inputs[2]
        name = layer.name
        mm = node(graph, "MatMulInteger", [y, w_value, zero_point, w_zp], name=f"{name}_int")
        cast = node(graph, "Cast", [mm.outputs[0]], name=f"{name}_cast", to=ir.DataType.FLOAT)
        scales = node(graph, "Mul", [scale, w_scale], name=f"{name}_scales")
        mul = node(graph, "Mul", [cast.outputs[0], scales.outputs[0]], name=f"{name}_rescale")
        new_nodes, out = [mm, cast, scales, mul], mul.outputs[0]
        bias = layer.inputs[2] if layer.op_type == "Gemm" and len(layer.inputs) > 2 else None
        if bias is not None:
            add = node(graph, "Add", [out, bias], name=f"{name}_bias")
            new_nodes.append(add)
            out = add.outputs[0]
        for v in (mm.outputs[0],):
            v.type = ir.TensorType(ir.DataType.INT32)
        for v in (cast.outputs[0], scales.outputs[0], mul.outputs[0], *new_nodes[-1].outputs):
            v.type = ir.TensorType(ir.DataType.FLOAT)
        out.shape = layer.outputs[0].shape
        graph.insert_before(layer, new_nodes)
        replace_value(graph, layer.outputs[0], out)
        graph.remove(layer, safe=True)
        mm.name = name  # the layer's name, which placement looks for
        if not act_dq.outputs[0].uses():
            graph.remove(act_dq, safe=True)
        if not w_dq.outputs[0].uses():
            graph.remove(w_dq, safe=True)
