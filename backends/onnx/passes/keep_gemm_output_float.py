"""KeepGemmOutputFloatPass: a static int8 linear read only by float ops writes float, not int8.

    Gemm(DQ(x), DQ(W, sw), DQ(b, sx·sw)) → Q(y) [→ Reshape] → DQ [→ Mul(·, c)] → float ops
      ⇒  Gemm(DQ(x), DQ(W, sw·c), DQ(b, sx·sw·c)) [→ Reshape] → float ops

Why: the converted graph quantizes every int8 linear's output, because XNNPACK's static
fully-connected (the .pte) must write int8. ONNX Runtime's QGemm can instead write float: it
scales the exact int32 sum by sx·sw once. Where every reader works in float anyway (the
transformer residual add into LayerNorm, GELU, the model output), requantizing to int8 and
dequantizing again only costs time and one rounding. On all-MiniLM-L6-v2 with outlier handling
this removes 32 QuantizeLinear/DequantizeLinear pairs and folds all 14 output-rescale multiplies
(`pt2e_int8/transforms/rescale_outputs.py`) into the weights' per-channel scales: the
smoothed file then runs as fast as plain static, and its cosine rises 0.0003.
`onnx_reference` computes the same (float outputs where this pass makes them).

Fires on a Gemm whose activation and weight are dequantized int8 constants and whose result
is quantized per tensor, then (through at most one Reshape) dequantized and read only by float
ops: a QuantizeLinear reached through data movement (Reshape, Transpose, ...), or a reader whose
own result is quantized (an attention MatMul, a GELU into a quantize), means an int8 reader,
and the linear is left alone; so is a linear whose dequantized result is the model's
output (there the int8 range clamps, as in the converted graph, and users compare against it). A Mul by a constant of powers of two along the output
channels, the DQ's only reader, is folded into the scales (powers of two keep the fold exact);
any other Mul stays.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from backends.onnx.passes._match import (
    add_initializer,
    attr,
    constant,
    only_consumer,
    producer,
    replace_value,
)

# Ops that move int8 values without computing: a QuantizeLinear behind them is an int8 reader.
DATA_MOVEMENT = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Expand"})


def feeds_quantize(value: ir.Value) -> bool:
    """Whether `value` reaches a QuantizeLinear through data movement alone."""
    for user in value.consumers():
        if user.op_type == "QuantizeLinear" or user.op_type in DATA_MOVEMENT and feeds_quantize(user.outputs[0]):
            return True
    return False


def read_in_int8(value: ir.Value) -> bool:
    """Whether a dequantized `value` has an int8 reader: a QuantizeLinear behind data movement,
    or an op whose own result is quantized (QDQ's form of an int8 op: DQ → MatMul → Q)."""
    return feeds_quantize(value) or any(
        user.op_type not in DATA_MOVEMENT and any(feeds_quantize(o) for o in user.outputs)
        for user in value.consumers())


def _channel_factors(mul: ir.Node, source: ir.Value, channels: int) -> np.ndarray | None:
    """The Mul's constant as one power of two per output channel, or None when it is not that."""
    other = mul.inputs[1] if mul.inputs[0] is source else mul.inputs[0]
    c = constant(other)
    if c is None or c.dtype != np.float32 or c.size not in (1, channels) or any(d != 1 for d in c.shape[:-1]):
        return None
    c = np.broadcast_to(c.reshape(-1), (channels,)).astype(np.float32)
    mantissa, _ = np.frexp(c)
    return c if bool((c > 0).all() and (mantissa == 0.5).all()) else None


def _match(gemm: ir.Node):
    """(weight DQ, bias DQ | None, Q, Reshape | None, DQ) of a static linear whose output is only read in float."""
    act_dq, w_dq = producer(gemm.inputs[0], "DequantizeLinear"), producer(gemm.inputs[1], "DequantizeLinear")
    if act_dq is None or w_dq is None or constant(w_dq.inputs[0]) is None or attr(gemm, "transA", 0):
        return None
    bias_dq = producer(gemm.inputs[2], "DequantizeLinear") if len(gemm.inputs) > 2 and gemm.inputs[2] is not None else None
    if len(gemm.inputs) > 2 and gemm.inputs[2] is not None and bias_dq is None:
        return None  # a float bias: ONNX Runtime rounds it at fusion time; not worth a second form
    q = only_consumer(gemm.outputs[0], "QuantizeLinear")
    if q is None:
        return None
    reshape = only_consumer(q.outputs[0], "Reshape")
    dq = only_consumer((reshape or q).outputs[0], "DequantizeLinear")
    if dq is None or dq.outputs[0].is_graph_output() or read_in_int8(dq.outputs[0]):
        return None  # an int8 reader; or the model's output, which keeps the converted graph's range
    return w_dq, bias_dq, q, reshape, dq


def _scale_by(graph: ir.Graph, dq: ir.Node, factors: np.ndarray, axis: int) -> None:
    """Multiply a DequantizeLinear's scale by per-channel `factors` along `axis` of its tensor."""
    scale, zero_point = constant(dq.inputs[1]), constant(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] is not None else None
    channels = factors.size
    dq.replace_input_with(1, add_initializer(graph, f"{dq.inputs[1].name}_x", (np.broadcast_to(scale, (channels,)) * factors).astype(np.float32)))
    if zero_point is not None and zero_point.size == 1:
        dq.replace_input_with(2, add_initializer(graph, f"{dq.inputs[2].name}_{channels}", np.full(channels, zero_point.reshape(()), zero_point.dtype)))
    dq.attributes["axis"] = ir.AttrInt64("axis", axis)


class KeepGemmOutputFloatPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        for gemm in [n for n in graph if n.op_type == "Gemm" and n.domain == ""]:
            found = _match(gemm)
            if found is None:
                continue
            w_dq, bias_dq, q, reshape, dq = found
            out = dq.outputs[0]
            mul = only_consumer(out, "Mul")
            w_axis = 0 if attr(gemm, "transB", 0) else 1  # the output channels of W
            channels = constant(w_dq.inputs[0]).shape[w_axis]
            last = out.shape[-1] if out.shape is not None and len(out.shape) else None
            # (the Mul broadcasts along the last axis: it must still be the Gemm's channels after the Reshape)
            factors = _channel_factors(mul, out, channels) if mul is not None and last == channels else None
            folded = factors is not None and all(len(d.outputs[0].uses()) == 1 for d in (w_dq, bias_dq) if d is not None)
            if folded:
                _scale_by(graph, w_dq, factors, w_axis)
                if bias_dq is not None:
                    _scale_by(graph, bias_dq, factors, 0)
                out = mul.outputs[0]
            float_out = gemm.outputs[0]
            if reshape is not None:
                reshape.replace_input_with(0, gemm.outputs[0])
                reshape.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
                float_out = reshape.outputs[0]
            replace_value(graph, out, float_out)
            for dead in ([mul] if folded else []) + [dq, q]:
                graph.remove(dead, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)
