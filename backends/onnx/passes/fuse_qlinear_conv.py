"""FuseQLinearConvPass (style="qop"): explicit int8 convolution with the bias folded in.

    DQ(x) → Conv(·, DQ(W), DQ(b:int32)) [→ Relu] → Q(y)  ⇒  QLinearConv(x, W, y qparams, b)

QLinearConv's bias input is the int32 bias with scale x_scale × w_scale, as the quantizer
wrote it. A Relu is absorbed when y's zero point is its type's minimum. Convs with a float
bias or without quantized inputs and output stay as they are.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from backends.onnx.passes._match import (
    constant,
    dequantized_input,
    node,
    quantized_output,
    replace_with_fused,
)


class FuseQLinearConvPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        for conv in [n for n in graph if n.op_type == "Conv" and n.domain == ""]:
            x, w = dequantized_input(conv.inputs[0]), dequantized_input(conv.inputs[1])
            out = quantized_output(conv.outputs[0])
            if x is None or w is None or out is None or constant(w[0]) is None:
                continue
            bias = None
            if len(conv.inputs) > 2 and conv.inputs[2] is not None:
                b = dequantized_input(conv.inputs[2])
                if b is None or constant(b[0]) is None or constant(b[0]).dtype != np.int32:
                    continue
                bias = b[0]
            relu, q = out
            fused = node(graph, "QLinearConv", [*x, *w, q.inputs[1], q.inputs[2], bias], name=f"{conv.name}_q",
                         **{k: a.value for k, a in conv.attributes.items()})
            replace_with_fused(graph, fused, conv, relu, q)
            modified = True
        return ir.passes.PassResult(model, modified)
