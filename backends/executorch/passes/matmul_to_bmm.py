"""Write a 4-D activation matmul with static shapes as reshape → bmm → reshape.

    matmul(a[B,H,T,D], b[B,H,D,S])  ⇒  bmm(a.reshape(B*H,T,D), b.reshape(B*H,D,S)).reshape(B,H,T,S)

Why: to_edge decomposes a 4-D matmul into expand_copy → view → bmm → view, and the
no-op expand_copy has no XNNPACK config, so every attention matmul cuts the delegate in
two (MiniLM: two extra delegate calls per layer). Static reshapes and bmm are XNNPACK ops.
The matmul node keeps its name (it becomes the bmm), so placement still finds the layer.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from pt2e_int8.qdq import is_dequantize, is_quantize

aten = torch.ops.aten


def _shape(arg) -> tuple | None:
    """Static shape of a matmul operand, looking through its q/dq pair when they lack meta."""
    node = arg
    for _ in range(3):
        if not isinstance(node, Node):
            return None
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            shape = tuple(val.shape)
            return shape if all(isinstance(d, int) for d in shape) else None
        if not (is_dequantize(node) or is_quantize(node)):
            return None
        node = node.args[0]
    return None


class ReplaceMatmulWithBmmPass(PassBase):
    """Fires on aten.matmul of two 4-D operands with the same static leading dims. Leaves
    alone broadcasting, 2-D / 3-D matmuls and symbolic shapes (a dynamic batch: XNNPACK
    cannot delegate those reshapes anyway).
    """

    def call(self, graph_module: GraphModule) -> PassResult:
        modified = False
        graph = graph_module.graph
        for node in list(graph.nodes):
            if node.op != "call_function" or node.target is not aten.matmul.default:
                continue
            a_shape, b_shape = _shape(node.args[0]), _shape(node.args[1])
            if a_shape is None or b_shape is None or len(a_shape) != 4 or len(b_shape) != 4:
                continue
            if a_shape[:2] != b_shape[:2] or a_shape[3] != b_shape[2]:
                continue
            (batch, heads, t, d), s = a_shape, b_shape[3]
            with graph.inserting_before(node):
                a3 = graph.call_function(aten.reshape.default, (node.args[0], [batch * heads, t, d]))
                b3 = graph.call_function(aten.reshape.default, (node.args[1], [batch * heads, d, s]))
            node.target, node.args = aten.bmm.default, (a3, b3)
            with graph.inserting_after(node):
                back = graph.call_function(aten.reshape.default, (node, [batch, heads, t, s]))
            node.replace_all_uses_with(back, delete_user_cb=lambda user, keep=back: user is not keep)
            for new in (a3, b3, back):
                new.meta.update({k: v for k, v in node.meta.items() if k in ("nn_module_stack", "stack_trace")})
            node.meta.pop("val", None)
            modified = True
        return PassResult(graph_module, modified)
