"""FuseQLinearMatMulPass (style="qop"): explicit int8 matmul (attention scores and context).

    DQ(a) → MatMul(·, DQ(b)) → Q(y)  ⇒  QLinearMatMul(a, a qparams, b, b qparams, y qparams)

Fires on per-tensor activation × activation matmuls and on bias-free linears that
RewriteLinearAsGemmPass left as MatMul; leaves any MatMul whose inputs are not both
dequantized, or whose output is not quantized, alone.
"""

from __future__ import annotations

import onnx_ir as ir

from backends.onnx.passes._match import (
    dequantized_input,
    node,
    quantized_output,
    replace_with_fused,
)


class FuseQLinearMatMulPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        for matmul in [n for n in graph if n.op_type == "MatMul" and n.domain == ""]:
            a, b = dequantized_input(matmul.inputs[0]), dequantized_input(matmul.inputs[1])
            out = quantized_output(matmul.outputs[0])
            if a is None or b is None or out is None or out[0] is not None:
                continue
            if a[2] is None or b[2] is None:
                continue
            q = out[1]
            fused = node(graph, "QLinearMatMul", [*a, *b, q.inputs[1], q.inputs[2]], name=f"{matmul.name}_q")
            replace_with_fused(graph, fused, matmul, None, q)
            modified = True
        return ir.passes.PassResult(model, modified)
