"""FoldWeightTransposePass: store MatMul weights pre-transposed.

    Transpose(DequantizeLinear(W, s, z, axis=a), perm=[1, 0])  ⇒  DequantizeLinear(Wᵀ, s, z, axis=1-a)

torch.onnx writes `x @ W.T` for an N-D linear as a Transpose of the dequantized weight. ONNX
Runtime's QDQ fusion wants the weight DequantizeLinear to feed the MatMul/Gemm directly, and
with float (weight-only) compute the Transpose would run on every call, since runtimes do not
constant-fold DequantizeLinear. Fires only on a 2-D constant weight; every other Transpose is left alone.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from backends.onnx.passes._match import add_initializer, attr, constant, node, producer


class FoldWeightTransposePass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        for transpose in [n for n in graph if n.op_type == "Transpose" and n.domain == ""]:
            dq = producer(transpose.inputs[0], "DequantizeLinear")
            weight = constant(dq.inputs[0]) if dq is not None else None
            if weight is None or weight.ndim != 2 or list(attr(transpose, "perm", [1, 0])) != [1, 0]:
                continue
            axis = attr(dq, "axis", 1)
            scale, zero_point = dq.inputs[1], dq.inputs[2] if len(dq.inputs) > 2 else None
            per_channel = scale.shape is not None and len(scale.shape) == 1
            w_t = add_initializer(graph, f"{dq.inputs[0].name}_t", np.ascontiguousarray(weight.T))
            attrs = {"axis": 1 - (axis % 2)} if per_channel else {}
            new_dq = node(graph, "DequantizeLinear", [w_t, scale, zero_point], name=f"{dq.name}_t", **attrs)
            new_dq.outputs[0].type = dq.outputs[0].type
            new_dq.outputs[0].shape = ir.Shape(list(w_t.shape))
            graph.insert_before(transpose, new_dq)
            transpose.outputs[0].replace_all_uses_with(new_dq.outputs[0])
            graph.remove(transpose, safe=True)
            if not dq.outputs[0].uses():
                graph.remove(dq, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)
