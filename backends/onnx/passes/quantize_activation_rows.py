"""QuantizeActivationRowsPass: dynamic int8 linears with one activation scale per row (token), not per tensor.

    DQL(x) → MatMulInteger(y, W, zp, zw) → Cast → Mul(·, scale · sw) [→ Add(bias)]      (one per linear)
      ⇒  s = max(|x|) / 127 per row;  q = QuantizeLinear(x[M, K], s, 128, axis=0)      (once per input)
         → com.microsoft.MatMulIntegerToFloat(q, W, s[M, 1], sw, 128, zw) → [Reshape] [→ Add(bias)]

Why: DynamicQuantizeLinear picks one scale for the whole activation, so on transformers one
token with a large value (or a padding row) coarsens every other token's steps. XNNPACK's
dynamic linears (the .pte) scale each row on its own; on all-MiniLM-L6-v2 that is mean cosine
0.9988 against 0.9929 per tensor. ONNX Runtime has no per-row dynamic quantize op, but its
MatMulIntegerToFloat takes an A scale of shape [M, 1] (symmetric per-row, zero point 128 on
uint8; its kernels take no per-row zero point). Symmetric per row measured 0.9971 on MiniLM.

The bias stays a separate Add: ONNX Runtime 1.32's MatMulIntegerToFloat multiplies its bias
input by a non-scalar A scale, and its MatMulIntegerToFloatFusion folds a
MatMulInteger → Cast → Mul → Add chain into exactly that (wrong) form, which is why this pass
writes the contrib op itself rather than standard ops. The separate Add is what ONNX Runtime's
own SkipLayerNormalization and BiasGelu fusions absorb.

Fires on a DynamicQuantizeLinear of a rank ≥ 3 activation ([batch, tokens, features]) whose
every use is a linear in RewriteDynamicLinearPass's form (input 0 of a MatMulInteger with a
constant 2-D weight whose float result is rescaled by `scale · sw`). Leaves alone 2-D
activations (rows are samples: at batch 1 one row is the whole tensor, and the single fused
DynamicQuantizeMatMul is cheaper: 1.04× vs 1.2× float on the digits CNN's head), those with any
other use, and static graphs.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from backends.onnx.passes._match import (
    add_initializer,
    constant,
    live_nodes,
    node,
    only_consumer,
    producer,
    replace_value,
)

# Smallest row maximum used for a scale: an all-zero row then quantizes to 128 (zero) exactly.
_TINY = np.float32(1e-30)


def _linear(mm: ir.Node, dql: ir.Node):
    """(cast, scales Mul, rescale Mul) of a MatMulInteger in RewriteDynamicLinearPass's form, else None."""
    y, scale, zp = dql.outputs
    if mm.op_type != "MatMulInteger" or mm.domain != "" or len(mm.inputs) < 3:
        return None
    if mm.inputs[0] is not y or mm.inputs[2] is not zp or mm.inputs[1] is None:
        return None
    weight = constant(mm.inputs[1])
    if weight is None or weight.ndim != 2 or weight.dtype != np.int8 and weight.dtype != np.uint8:
        return None
    cast = only_consumer(mm.outputs[0], "Cast")
    rescale = only_consumer(cast.outputs[0], "Mul") if cast is not None else None
    if rescale is None:
        return None
    scales = producer(rescale.inputs[1], "Mul") or producer(rescale.inputs[0], "Mul")
    if scales is None or scale not in scales.inputs:
        return None
    w_scale = scales.inputs[1] if scales.inputs[0] is scale else scales.inputs[0]
    if constant(w_scale) is None:
        return None
    return cast, scales, rescale, w_scale


def _match(dql: ir.Node, live: set[int]) -> list | None:
    y, scale, zp = dql.outputs
    x = dql.inputs[0]
    if x is None or x.shape is None or len(x.shape) < 3:
        return None
    if any(v.is_graph_output() for v in dql.outputs) or not y.uses():
        return None
    found = []
    for mm in [u for u in y.consumers() if id(u) in live]:
        parts = _linear(mm, dql)
        if parts is None:
            return None
        found.append((mm, *parts))
    users = {id(u) for u in (*zp.consumers(), *scale.consumers()) if id(u) in live}
    expected = {id(p) for f in found for p in (f[0], f[2])}  # MatMulIntegers read zp, scale Muls read scale
    return found if users == expected else None


class QuantizeActivationRowsPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified, live = model.graph, False, live_nodes(model.graph)
        for dql in [n for n in graph if n.op_type == "DynamicQuantizeLinear" and n.domain == ""]:
            found = _match(dql, live)
            if found:
                self._rewrite(graph, dql, found)
                modified = True
        if modified:
            model.opset_imports.setdefault("com.microsoft", 1)
        return ir.passes.PassResult(model, modified)

    @staticmethod
    def _rewrite(graph: ir.Graph, dql: ir.Node, found: list) -> None:
        x, name = dql.inputs[0], dql.name or "dql"
        k = constant(found[0][0].inputs[1]).shape[0]
        new: list[ir.Node] = []

        def add(n: ir.Node, dtype: ir.DataType | None = None) -> ir.Value:
            new.append(n)
            if dtype is not None:
                n.outputs[0].type = ir.TensorType(dtype)
            return n.outputs[0]

        def const(base: str, array) -> ir.Value:
            return add_initializer(graph, f"{name}_{base}", np.asarray(array))

        f32, u8 = ir.DataType.FLOAT, ir.DataType.UINT8
        rows = add(node(graph, "Reshape", [x, const("2d", np.array([-1, k], np.int64))], name=f"{name}_rows"), f32)
        axis1 = const("axis1", np.array([1], np.int64))
        hi = add(node(graph, "ReduceMax", [rows, axis1], name=f"{name}_row_max", keepdims=1), f32)
        lo = add(node(graph, "ReduceMin", [rows, axis1], name=f"{name}_row_min", keepdims=1), f32)
        neg = add(node(graph, "Neg", [lo], name=f"{name}_row_neg_min"), f32)
        amax = add(node(graph, "Max", [hi, neg, const("tiny", _TINY)], name=f"{name}_row_absmax"), f32)
        scale = add(node(graph, "Div", [amax, const("qmax", np.float32(127))], name=f"{name}_row_scale"), f32)
        flat = add(node(graph, "Reshape", [scale, const("flat", np.array([-1], np.int64))],
                        name=f"{name}_row_scale_flat"), f32)
        count = add(node(graph, "Shape", [flat], name=f"{name}_rows_count"), ir.DataType.INT64)
        zp128 = const("zero_point", np.uint8(128))
        zps = add(node(graph, "Expand", [zp128, count], name=f"{name}_row_zero_points"), u8)
        q = add(node(graph, "QuantizeLinear", [rows, flat, zps], name=f"{name}_row_quantize", axis=0), u8)
        graph.insert_before(dql, new)
        for mm, cast, scales, rescale, w_scale in found:
            w_zp = mm.inputs[3] if len(mm.inputs) > 3 else None
            layer = mm.name
            new = []
            out = add(node(graph, "MatMulIntegerToFloat", [q, mm.inputs[1], scale, w_scale, zp128, w_zp],
                           name=f"{layer}_rows", domain="com.microsoft"), f32)
            n_out, middle = constant(mm.inputs[1]).shape[1], list(x.shape)[1:-1]
            if all(isinstance(d, int) for d in middle):  # only the batch is dynamic: a constant shape
                target = const(f"{layer}_nd", np.array([-1, *middle, n_out], np.int64))
            else:
                lead = add(node(graph, "Shape", [x], name=f"{layer}_lead_shape", end=-1), ir.DataType.INT64)
                target = add(node(graph, "Concat", [lead, const(f"{layer}_n", np.array([n_out], np.int64))],
                                  name=f"{layer}_out_shape", axis=0), ir.DataType.INT64)
            out = add(node(graph, "Reshape", [out, target], name=f"{layer}_unflatten"), f32)
            out.shape = rescale.outputs[0].shape
            graph.insert_before(rescale, new)
            replace_value(graph, rescale.outputs[0], out)
            for dead in (rescale, scales, cast, mm):
                graph.remove(dead, safe=True)
            new[0].name = layer  # the layer's name, which placement looks for
        if not any(v.uses() for v in dql.outputs):  # else dead leftovers (Casts) read it: RemoveUnusedNodesPass
            graph.remove(dql, safe=True)
