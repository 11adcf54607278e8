"""Turn a clamp fused after a GEMM/conv into hardtanh, the form XNNPACK fuses.

    dq → linear → clamp(lo, hi) → q  ⇒  dq → linear → hardtanh(lo, hi) → q

Why: the core quantizer fuses relu / hardtanh / clamp into the layer's output range, but
XNNPACK's linear and conv configs only absorb relu and hardtanh; a clamp between the
GEMM and its quantize leaves the layer outside the delegate ("Expected output node to
have a dequantized node").
"""

from __future__ import annotations

import math

import torch
from torch.fx import GraphModule, Node
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from pt2e_int8.ops import layer_op
from pt2e_int8.qdq import is_quantize

aten = torch.ops.aten
_CLAMPS = (aten.clamp.default, aten.clamp_.default)


def _bounds(node: Node) -> tuple[float, float] | None:
    args = list(node.args[1:]) + [None] * (3 - len(node.args))
    lo = node.kwargs.get("min", args[0])
    hi = node.kwargs.get("max", args[1])
    if not all(v is None or isinstance(v, int | float) for v in (lo, hi)):
        return None  # tensor bounds: not a fixed output range
    return (-math.inf if lo is None else float(lo), math.inf if hi is None else float(hi))


class ReplaceClampWithHardtanhPass(PassBase):
    """Fires on a scalar clamp whose input is a linear/conv output (sole user) and whose only
    user is a quantize. Leaves alone clamps elsewhere (float regions, tensor bounds).
    """

    def call(self, graph_module: GraphModule) -> PassResult:
        modified = False
        for node in list(graph_module.graph.nodes):
            if node.op != "call_function" or node.target not in _CLAMPS:
                continue
            src = node.args[0]
            if not (isinstance(src, Node) and layer_op(src) is not None and len(src.users) == 1):
                continue
            if len(node.users) != 1 or not is_quantize(next(iter(node.users))):
                continue
            bounds = _bounds(node)
            if bounds is None:
                continue
            node.target = aten.hardtanh.default
            node.args, node.kwargs = (src, *bounds), {}
            modified = True
        return PassResult(graph_module, modified)
