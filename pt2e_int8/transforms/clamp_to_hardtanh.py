"""Write a clamp right after a linear / conv as hardtanh (two scalar bounds) or relu (min=0).

    linear → clamp(lo, hi)  ⇒  linear → hardtanh(lo, hi)        conv → clamp(min=0)  ⇒  conv → relu

Why: XNNPACK's linear and conv configs absorb relu and hardtanh into the GEMM's output
range, but not clamp: a clamp after a quantized linear leaves the linear outside the
delegate of ExecuTorch's standard lowering ("Expected output node to have a dequantized
node"). Both forms compute the same values, in float and in every backend (ONNX exports
both as Clip), so the rewrite is exact. A clamp anywhere else stays as written: XNNPACK runs
it as a standalone int8 clamp.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from pt2e_int8.annotators.framework import is_float_tensor
from pt2e_int8.ops import FUSED_ACTIVATIONS

aten = torch.ops.aten


def _bounds(node: Node) -> tuple[object, object]:
    args = list(node.args[1:3]) + [None] * (3 - len(node.args))
    return node.kwargs.get("min", args[0]), node.kwargs.get("max", args[1])


def _after_fusing_layer(node: Node) -> bool:
    """Whether `node`'s input is a layer whose int8 kernel fuses hardtanh, and `node` its only user."""
    src = node.args[0]
    return (isinstance(src, Node) and src.op == "call_function" and len(src.users) == 1
            and aten.hardtanh.default in FUSED_ACTIVATIONS.get(src.target, ()))


class RewriteClampAsHardtanhPass(PassBase):
    """Fires on `aten.clamp.default` of a float tensor with scalar bounds, both set (→ hardtanh)
    or min=0 alone (→ relu), that is the only user of a linear / conv. Leaves alone clamps
    elsewhere and other one-sided clamps (XNNPACK runs those as a standalone int8 clamp),
    tensor bounds and integer tensors.
    """

    def call(self, graph_module: GraphModule) -> PassResult:
        modified = False
        for node in list(graph_module.graph.nodes):
            if node.op != "call_function" or node.target != aten.clamp.default or not is_float_tensor(node):
                continue
            if not _after_fusing_layer(node):
                continue
            lo, hi = _bounds(node)
            if not all(v is None or isinstance(v, int | float) for v in (lo, hi)):
                continue
            if lo is not None and hi is not None:
                node.target, node.args, node.kwargs = aten.hardtanh.default, (node.args[0], float(lo), float(hi)), {}
            elif lo == 0 and hi is None:
                node.target, node.args, node.kwargs = aten.relu.default, (node.args[0],), {}
            else:
                continue
            modified = True
        if modified:
            graph_module.recompile()
        return PassResult(graph_module, modified)
