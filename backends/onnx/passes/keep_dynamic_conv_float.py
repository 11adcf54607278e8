"""KeepDynamicConvFloatPass: dynamically quantized convolutions run as float convolutions.

    DQL(x) → DQ(y, s, z) → Conv(·, DQ(W:int8, sw, 0), b)  ⇒  Conv(x, W · sw : float32, b)

Why: ONNX Runtime fuses no DynamicQuantizeLinear → DequantizeLinear → Conv; left as is it
quantizes, dequantizes and runs a float Conv on every call (the digits CNN's dynamic ONNX ran
1.5× float). Its only integer form for dynamic convs, ConvInteger + Cast + Mul, is what
ONNX Runtime's own quantize_dynamic writes, and that ran 2.7× float on the same CNN
(bench/RESULTS.md). Dynamic int8 has no fast convolution in ONNX Runtime, so the exporter keeps
these layers in float, with their int8-rounded weights (the quantizer's weight error, no
activation error), and says so in the placement detail. For int8 convolutions in ONNX, quantize
them statically (QuantConfig.static()): those become QLinearConv.

Fires on a Conv whose input is dequantized from a DynamicQuantizeLinear and whose weight is a
dequantized constant. Leaves alone static convs (quantized input from a QuantizeLinear), float
convs and dynamic linears.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from backends.onnx.passes._match import add_initializer, attr, constant, producer

# graph.meta key: {layer node name: why it runs in float}, read by export_onnx for placement details.
FLOAT_NOTES = "pt2e_int8_float_layers"
REASON = ("dynamic int8 conv exported in float: ONNX Runtime has no fused dynamic conv (its ConvInteger form "
          "ran 2.7x float Conv); use QuantConfig.static() for int8 convs")


def _dequantized_weight(dq: ir.Node) -> np.ndarray | None:
    weight, scale = constant(dq.inputs[0]), constant(dq.inputs[1])
    zero_point = constant(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] is not None else None
    if weight is None or scale is None:
        return None
    zp = zero_point.astype(np.float32) if zero_point is not None else np.float32(0)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * weight.ndim
        shape[attr(dq, "axis", 1) % weight.ndim] = -1
        scale, zp = scale.reshape(shape), np.reshape(zp, shape) if np.ndim(zp) else zp
    return ((weight.astype(np.float32) - zp) * scale).astype(np.float32)


class KeepDynamicConvFloatPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        notes = graph.meta.setdefault(FLOAT_NOTES, {})
        for conv in [n for n in graph if n.op_type == "Conv" and n.domain == ""]:
            act_dq, w_dq = producer(conv.inputs[0], "DequantizeLinear"), producer(conv.inputs[1], "DequantizeLinear")
            dql = producer(act_dq.inputs[0], "DynamicQuantizeLinear") if act_dq is not None else None
            weight = _dequantized_weight(w_dq) if dql is not None and w_dq is not None else None
            if weight is None:
                continue
            conv.replace_input_with(0, dql.inputs[0])
            conv.replace_input_with(1, add_initializer(graph, f"{conv.name}_weight_float", weight))
            for dead in (act_dq, w_dq, dql):
                if not any(o.uses() or o.is_graph_output() for o in dead.outputs):
                    graph.remove(dead, safe=True)
            notes[conv.name] = REASON
            modified = True
        return ir.passes.PassResult(model, modified)
