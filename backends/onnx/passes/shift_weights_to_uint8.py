"""ShiftWeightsToUint8Pass: store the int8 weights of int8 GEMMs / convs as uint8 (w + 128, zero point 128).

    DQ(W:int8, s, 0) → Gemm/MatMul/Conv(DQ(x), ·)  ⇒  DQ(W + 128 : uint8, s, 128) → ...

Why (the drift fix, chosen at file level): on x86 ONNX Runtime rewrites int8 activations to
uint8 and runs QGemm / QLinearMatMul / QLinearConv / MatMulInteger with its U8S8 kernels. On
CPUs without AVX-VNNI (AVX2 only, like Zen 1) that kernel multiplies with vpmaddubsw, which
adds each pair of u8 × s8 products into a *saturating* int16: 255·127·2 > 32767, so
full-range -127..127 weights overflow and outputs drift by up to 32 quantization steps.
With uint8 weights ONNX Runtime picks its U8U8 kernels, which widen to int16 before
multiplying and are exact on every CPU. The dequantized weights are bit-identical, so the
PyTorch reference is unchanged. The alternatives fix less: `session.x64quantprecision=1` is a
session option (a plain InferenceSession still drifts), and 7-bit weights change the model's
numerics for every backend. Cost: measured in bench/ and the module docstring of export.py.

Fires on a weight DequantizeLinear (int8 constant, zero points all 0) that feeds input 1 of a
Gemm / MatMul / Conv whose input 0 is itself dequantized (an int8 kernel). Leaves alone:
weight-only layers (float activation: they run in float, nothing overflows) and, unless
`force`, weights already within 7 bits (-64..63): 2·255·64 ≤ 32767, so U8S8 cannot saturate
and they keep the faster int8 path (ONNX Runtime's `reduce_range` idea, chosen in the
quantizer with `QuantConfig(weight_qmin=-64, weight_qmax=63)`).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from backends.onnx.passes._match import add_initializer, constant, producer

INT8_KERNEL_OPS = frozenset({"Gemm", "MatMul", "Conv"})


def _feeds_int8_kernel(value: ir.Value) -> bool:
    users = value.consumers()
    return bool(users) and all(
        u.op_type in INT8_KERNEL_OPS and u.domain == "" and len(u.inputs) > 1 and u.inputs[1] is value
        and producer(u.inputs[0], "DequantizeLinear") is not None
        for u in users
    )


# Weights in this range cannot saturate vpmaddubsw's int16 pair sums with uint8 activations.
SEVEN_BIT = (-64, 63)


class ShiftWeightsToUint8Pass(ir.passes.InPlacePass):
    def __init__(self, force: bool = False) -> None:
        super().__init__()
        self.force = force  # shift 7-bit weights too

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        for dq in [n for n in graph if n.op_type == "DequantizeLinear" and n.domain == ""]:
            weight = constant(dq.inputs[0])
            zero_point = constant(dq.inputs[2]) if len(dq.inputs) > 2 else None
            if weight is None or weight.dtype != np.int8 or not _feeds_int8_kernel(dq.outputs[0]):
                continue
            if zero_point is not None and zero_point.any():
                continue
            if not self.force and SEVEN_BIT[0] <= weight.min() and weight.max() <= SEVEN_BIT[1]:
                continue
            shape = zero_point.shape if zero_point is not None else ()
            shifted = (weight.astype(np.int16) + 128).astype(np.uint8)
            new_weight = add_initializer(graph, f"{dq.inputs[0].name}_u8", shifted)
            zp = add_initializer(graph, f"{new_weight.name}_zero_point", np.full(shape, 128, np.uint8))
            dq.replace_input_with(0, new_weight)
            if len(dq.inputs) < 3:
                dq.resize_inputs(3)
            dq.replace_input_with(2, zp)
            modified = True
        return ir.passes.PassResult(model, modified)
