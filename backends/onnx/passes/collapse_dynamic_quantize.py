"""CollapseDynamicQuantizePass: one DynamicQuantizeLinear per dynamically quantized activation.

    QuantizeLinear(x, DQL(x).scale, Cast(DQL(x).zp))  ⇒  DQL(x).y
    DequantizeLinear(q, DQL(x).scale, Cast(DQL(x).zp)) ⇒  DequantizeLinear(DQL(x).y, scale, zp)

The dynamic-quantization translations emit DynamicQuantizeLinear for `choose_qparams` but
the exporter keeps PT2E's separate quantize op and stamps PT2E's types (float64 scale, int64
zero point) on the outputs. This pass restores the ONNX types and drops the repeated quantize,
leaving the DynamicQuantizeLinear → DequantizeLinear form ONNX Runtime fuses into
DynamicQuantizeMatMul / MatMulIntegerToFloat. Graphs without DynamicQuantizeLinear are untouched.
"""

from __future__ import annotations

import onnx_ir as ir

from backends.onnx.passes._match import producer, set_tensor_type


def _skip_cast(value: ir.Value) -> ir.Value:
    cast = producer(value, "Cast")
    return cast.inputs[0] if cast is not None else value


class CollapseDynamicQuantizePass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        for dql in [n for n in graph if n.op_type == "DynamicQuantizeLinear" and n.domain == ""]:
            x, (y, scale, zp) = dql.inputs[0], dql.outputs
            for value, dtype in ((y, ir.DataType.UINT8), (scale, ir.DataType.FLOAT), (zp, ir.DataType.UINT8)):
                if value.dtype != dtype:
                    set_tensor_type(value, dtype, None if value is y else [])
                    modified = True
            for user in list(scale.consumers()):
                if user.op_type not in ("QuantizeLinear", "DequantizeLinear") or _skip_cast(user.inputs[2]) is not zp:
                    continue
                if user.op_type == "QuantizeLinear" and user.inputs[0] is x:
                    user.outputs[0].replace_all_uses_with(y)
                    graph.remove(user, safe=True)
                    modified = True
                elif user.op_type == "DequantizeLinear" and user.inputs[2] is not zp:
                    user.replace_input_with(2, zp)
                    modified = True
        return ir.passes.PassResult(model, modified)
