"""The converted graph with its static int8 layers computed as the int8 kernels compute them.

    q(linear(dq(xq, sx, zx), dq(wq, sw), b), sy, zy)
      ⇒  q(round(fp32(Σ (xq - zx)·wq + round(b / (sx·sw))) · fp32(sx·sw / sy)) · sy, sy, zy)

Why: a converted graph computes a static int8 layer in float, on the dequantized operands:
an fp32 GEMM whose sum differs from the exact integer sum by float rounding (~1e-5 of an
output step for MiniLM's K = 384..1536). Every int8 kernel (XNNPACK's qs8 GEMM / convolution,
ONNX Runtime's QGemm / QLinearMatMul / QLinearConv) accumulates exactly in int32 and rounds once,
after one fp32 multiply. Near a rounding tie the two give different int8 values: one output step
on one element. A single such flip in a transformer's first layer grows by 2–4× per layer
(LayerNorm, attention and the FFN spread it over the row): on static all-MiniLM-L6-v2, both
artifacts agree with each other bit for bit but ended 7–32 output steps from the converted graph
on 9 of 16 held-out sentences; the .pte is 0.00 steps from this reference on all 16
(bench/issue11/steps; the ONNX file also needs QuantizeLinear's division, backends/onnx/reference.py).

This module builds that reference; it is never lowered (the backends pattern-match the
converted graph's dq → layer → q). The accumulation runs in float64 on integer values, exact
below 2**53; the requantization follows the kernels: fp32(acc) × fp32(fp32(sx·sw) / sy), rounded
half to even, clamped to the output range. Layers whose operands are not statically quantized,
or whose result is not quantized per tensor (a float output, a dynamic layer), are left alone,
except the layers named in `float_outputs`: a backend runs those with a float result, fp32(acc)
× fp32(sx·sw) (ONNX Runtime's QGemm without an output scale, backends/onnx/reference.py).
"""

from __future__ import annotations

import copy

import torch
from torch.fx import GraphModule, Node

from pt2e_int8.annotators.framework import fused_activation
from pt2e_int8.ops import LAYER_OPS
from pt2e_int8.qdq import is_dynamic_dequantize

aten = torch.ops.aten
_qd = torch.ops.quantized_decomposed

# Layer families every int8 backend here runs as an integer GEMM or convolution.
INTEGER_FAMILIES = frozenset({"linear", "matmul", "conv", "conv_transpose"})
_OPERAND_DQ = frozenset({_qd.dequantize_per_tensor.default, _qd.dequantize_per_channel.default})
# Output channel axis of each family's result (bias and per-channel scale broadcast along it).
_OUT_AXIS = {"linear": -1, "matmul": -1, "conv": 1, "conv_transpose": 1}
# A graph argument must be printable in generated code: the layer op travels by name.
_OPS_BY_NAME = {str(op): op for op in LAYER_OPS}


def _f32(value) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float32)


def _integer(q: torch.Tensor, zero_point, axis: int | None) -> torch.Tensor:
    """An int8 operand minus its zero point, as exact float64 integers."""
    zp = torch.as_tensor(zero_point, dtype=torch.float64)
    if axis is not None and zp.dim() == 1:
        shape = [1] * q.dim()
        shape[axis] = -1
        zp = zp.reshape(shape)
    return q.to(torch.float64) - zp


def _along(values: torch.Tensor, out: torch.Tensor, axis: int) -> torch.Tensor:
    """Per-channel `values` shaped to broadcast along `axis` of `out` (a scalar stays one)."""
    if values.numel() == 1:
        return values.reshape(())
    shape = [1] * out.dim()
    shape[axis] = -1
    return values.reshape(shape)


def int8_layer(op_name: str, args: tuple, act: int, weight: int, bias: int | None, family: str,
               xq: torch.Tensor, sx: float, zx, wq: torch.Tensor, sw, zw, w_axis: int | None,
               b: torch.Tensor | None, sy: float | None, zy: int, qmin: int, qmax: int) -> torch.Tensor:
    """One static int8 layer as a kernel computes it, returned as float on the output grid
    (integer × sy), which the graph's own output quantize maps back to the same integer; with
    `sy` None, the float result fp32(acc) × fp32(sx·sw) of a kernel that does not requantize."""
    op = _OPS_BY_NAME[op_name]
    args = list(args)
    args[act] = _integer(xq, zx, None)
    args[weight] = _integer(wq, zw, w_axis)
    if bias is not None:
        args[bias] = torch.zeros((), dtype=torch.float64) if op == aten.addmm.default else None
    acc = op(*args)
    axis = _OUT_AXIS[family]
    sxw = _f32(sx) * _f32(sw).reshape(-1)  # fp32, as the kernels derive it
    if b is not None:
        acc = acc + _along(torch.round(b.float() / sxw).double(), acc, axis)
    if sy is None:
        return acc.float() * _along(sxw, acc, axis)
    multiplier = _along(sxw / _f32(sy), acc, axis)
    value = (acc.float() * multiplier).clamp(qmin - zy, qmax - zy)
    return (torch.round(value).double() * sy).float()


def static_operand(node) -> bool:
    """Whether `node` dequantizes a graph value with constant qparams (a static int8 operand)."""
    return isinstance(node, Node) and node.op == "call_function" and node.target in _OPERAND_DQ \
        and not is_dynamic_dequantize(node) and isinstance(node.args[0], Node)


def _output_quantize(node: Node) -> Node | None:
    """The per-tensor static quantize of the layer's result (after its fused activation, if any)."""
    anchor = fused_activation(node) or node
    users = list(anchor.users)
    if len(users) != 1 or users[0].target != _qd.quantize_per_tensor.default:
        return None
    return users[0]


def _rewrite(graph: torch.fx.Graph, node: Node, families: frozenset, float_outputs: frozenset) -> bool:
    spec = LAYER_OPS.get(node.target) if node.op == "call_function" else None
    if spec is None or spec.family not in families or spec.weight is None:
        return False
    act, weight = node.args[spec.act], node.args[spec.weight]
    float_result = node.name in float_outputs
    out_q = None if float_result else _output_quantize(node)
    if (out_q is None and not float_result) or not static_operand(act) or not static_operand(weight):
        return False
    if act.target != _qd.dequantize_per_tensor.default or not isinstance(act.args[1], float | int):
        return False
    bias = node.args[spec.bias] if spec.bias is not None and len(node.args) > spec.bias else None
    if bias is not None and not isinstance(bias, Node):
        return False
    if weight.target == _qd.dequantize_per_channel.default:
        if weight.args[3] != spec.weight_axis:
            return False
        sw, zw, w_axis = weight.args[1], weight.args[2], weight.args[3]
    elif isinstance(weight.args[1], float | int):
        sw, zw, w_axis = float(weight.args[1]), weight.args[2], None
    else:
        return False
    sy, zy, qmin, qmax = out_q.args[1:5] if out_q is not None else (None, 0, 0, 0)
    with graph.inserting_before(node):
        new = graph.call_function(int8_layer, (
            str(node.target), tuple(node.args), spec.act, spec.weight, spec.bias if bias is not None else None,
            spec.family, act.args[0], float(act.args[1]), act.args[2], weight.args[0], sw, zw, w_axis,
            bias, None if sy is None else float(sy), int(zy), int(qmin), int(qmax)))
    node.replace_all_uses_with(new)
    graph.erase_node(node)
    return True


def int8_reference(gm: GraphModule, families=INTEGER_FAMILIES, float_outputs=frozenset()) -> GraphModule:
    """A copy of the converted `gm` whose static int8 layers of `families` compute with exact
    integer accumulation and the kernels' fp32 requantization; the layers named in
    `float_outputs` (their output quantize already removed) with the kernels' float result. `gm`
    is left unchanged; a module without an FX graph (a float model) is returned as it is.

    Example:
        ref = int8_reference(qm)
        ref(x)   # what XNNPACK's and ONNX Runtime's int8 kernels compute, where qm(x) may be a step off
    """
    if not isinstance(getattr(gm, "graph", None), torch.fx.Graph):
        return gm
    gm = copy.deepcopy(gm)
    families = frozenset(families)
    changed = False
    for node in list(gm.graph.nodes):
        changed |= _rewrite(gm.graph, node, families, frozenset(float_outputs))
    if changed:
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
    return gm
