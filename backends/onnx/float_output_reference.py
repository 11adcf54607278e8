"""The converted graph's side of KeepGemmOutputFloatPass: drop the output q → dq of the linears
the ONNX file keeps in float, so `onnx_reference` computes what ONNX Runtime does.

    linear(dq(x), dq(W), b) → q → dq → float ops   ⇒   linear(...) → float ops

The decision mirrors the ONNX pass (backends/onnx/passes/keep_gemm_output_float.py) on the same
structure: a static linear (constant-scale activation, constant weight) whose only user is a
per-tensor quantize, whose only user is a dequantize with no int8 reader (`read_in_int8`) that is not the
model's output. A float multiply after it (the output rescaling's powers of two) stays in the graph:
the pass folds it into the weights' scales, which is the same product exactly.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from pt2e_int8.int8_reference import static_operand
from pt2e_int8.qdq import is_dequantize, is_quantize
from pt2e_int8.transforms.channel_path import IDENTITIES, RESHAPES

aten = torch.ops.aten
_qd = torch.ops.quantized_decomposed

# What torch.onnx writes as the ONNX pass's DATA_MOVEMENT ops (Reshape, Transpose, Squeeze,
# Unsqueeze, Flatten, Identity, Expand); eval-mode dropout, clone and contiguous vanish.
DATA_MOVEMENT = IDENTITIES | RESHAPES | frozenset({
    aten.view_copy.default, aten.flatten.using_ints, aten.permute.default, aten.permute_copy.default,
    aten.transpose.int, aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default, aten.unsqueeze.default,
    aten.unsqueeze_copy.default, aten.expand.default,
})


def feeds_quantize(node: Node) -> bool:
    """Whether `node`'s result reaches a quantize through data movement alone."""
    return any(is_quantize(u) or u.op == "call_function" and u.target in DATA_MOVEMENT and feeds_quantize(u)
               for u in node.users)


def read_in_int8(node: Node) -> bool:
    """Whether a dequantized `node` has an int8 reader: a quantize behind data movement, or an op
    whose own result is quantized (dq → matmul → q), as KeepGemmOutputFloatPass decides."""
    return feeds_quantize(node) or any(u.target not in DATA_MOVEMENT and feeds_quantize(u) for u in node.users)


def _float_output(node: Node) -> tuple[Node, Node] | None:
    """(q, dq) after a static linear whose result is only read in float, else None."""
    if node.op != "call_function" or node.target != aten.linear.default:
        return None
    if not static_operand(node.args[0]) or not static_operand(node.args[1]):
        return None
    if node.args[0].target != _qd.dequantize_per_tensor.default or len(node.users) != 1:
        return None
    (q,) = node.users
    if q.target != _qd.quantize_per_tensor.default or len(q.users) != 1:
        return None
    (dq,) = q.users
    if not is_dequantize(dq) or read_in_int8(dq) or any(u.op == "output" for u in dq.users):
        return None
    return q, dq


def keep_linear_outputs_float(gm: GraphModule) -> frozenset[str]:
    """Remove, in place, the output q → dq of each linear the ONNX file keeps in float; returns their names.

    Example:
        names = keep_linear_outputs_float(ref)
        ref = int8_reference(ref, float_outputs=names)
    """
    names = []
    for node in list(gm.graph.nodes):
        found = _float_output(node)
        if found is None:
            continue
        q, dq = found
        # An alias keeps the dequantize's name, so debug_onnx still taps the layer's output there.
        with gm.graph.inserting_after(dq):
            kept = gm.graph.call_function(aten.alias.default, (node,))
        dq.replace_all_uses_with(kept)
        name = dq.name
        gm.graph.erase_node(dq)
        gm.graph.erase_node(q)
        kept.name = name
        names.append(node.name)
    if names:
        gm.graph.lint()
        gm.recompile()
    return frozenset(names)
