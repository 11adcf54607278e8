"""FuseQGemmPass (style="qop"): explicit int8 GEMM for runtimes that do not fuse QDQ themselves.

    DQ(a) → Gemm(·, DQ(W), DQ(b:int32)) [→ Relu] → Q(y)  ⇒  com.microsoft.QGemm(a, W, b, y qparams)
    DQ(a) → Gemm(·, DQ(W), DQ(b:int32)) → float        ⇒  com.microsoft.QGemm(a, W, b)   (float Y)

QGemm takes the int32 bias (scale a_scale × w_scale, zero point 0: what the quantizer wrote)
as C and requantizes to y in the kernel. A Relu is absorbed when y's zero point is its
type's minimum (the clamp then does the Relu); otherwise the layer stays in QDQ form, as do
Gemms whose bias is not int32 or whose alpha/beta are not 1.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from backends.onnx.passes._match import (
    attr,
    constant,
    dequantized_input,
    node,
    quantized_output,
    replace_with_fused,
)


def _int32_bias(gemm: ir.Node, a_scale: ir.Value, w_scale: ir.Value) -> ir.Value | None | bool:
    """The int32 bias tensor, None if there is no bias, False if the bias does not fit QGemm."""
    if len(gemm.inputs) < 3 or gemm.inputs[2] is None:
        return None
    found = dequantized_input(gemm.inputs[2])
    if found is None:
        return False
    bias, scale, zp = found
    values, s_a, s_w, s_b = constant(bias), constant(a_scale), constant(w_scale), constant(scale)
    if values is None or values.dtype != np.int32 or s_a is None or s_w is None or s_b is None:
        return False
    if zp is not None and constant(zp) is not None and constant(zp).any():
        return False
    return bias if np.allclose(s_b, s_a * s_w, rtol=1e-6, atol=0) else False


class FuseQGemmPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        for gemm in [n for n in graph if n.op_type == "Gemm" and n.domain == ""]:
            a, w = dequantized_input(gemm.inputs[0]), dequantized_input(gemm.inputs[1])
            out = quantized_output(gemm.outputs[0])
            if a is None or w is None or constant(w[0]) is None:
                continue
            if out is None and constant(a[1]) is None:
                continue  # a float result needs a static activation (KeepGemmOutputFloatPass's form)
            if attr(gemm, "alpha", 1.0) != 1.0 or attr(gemm, "beta", 1.0) != 1.0:
                continue
            bias = _int32_bias(gemm, a[1], w[1])
            if bias is False:
                continue
            if out is None:  # float result: QGemm without an output scale
                fused = node(graph, "QGemm", [*a, *w, bias], name=f"{gemm.name}_qgemm", domain="com.microsoft",
                             transA=attr(gemm, "transA", 0), transB=attr(gemm, "transB", 0), alpha=1.0)
                replace_with_fused(graph, fused, gemm, None, gemm)
                modified = True
                continue
            relu, q = out
            fused = node(graph, "QGemm", [*a, *w, bias, q.inputs[1], q.inputs[2] if len(q.inputs) > 2 else None],
                         name=f"{gemm.name}_qgemm", domain="com.microsoft",
                         transA=attr(gemm, "transA", 0), transB=attr(gemm, "transB", 0), alpha=1.0)
            replace_with_fused(graph, fused, gemm, relu, q)
            modified = True
        if modified:
            model.opset_imports.setdefault("com.microsoft", 1)
        return ir.passes.PassResult(model, modified)
