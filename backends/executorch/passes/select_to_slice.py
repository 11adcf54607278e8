"""Replace `select` by a slice of one element and a reshape, which XNNPACK runs.

    select(x, d, i)  ⇒  view(slice(x, d, i, i + 1), shape without d)

Why: XNNPACK has no select (ExecuTorch 1.5.1's partitioner has no config for `select_copy`),
so indexing one position (a ViT's class token `x[:, 0]`, a classifier reading an RNN's last
step `y[:, -1]`) runs on portable kernels between two delegate calls. Slice and view are
XNNPACK ops (static_slice, static_reshape) when the shapes are static; the reshape names the
batch -1 (XNNPACK takes one inferred dimension), so a dynamic-batch graph stays valid.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from pt2e_int8.qdq import QDQ_OPS

aten = torch.ops.aten


def _new_shape(node: Node) -> list[int] | None:
    """The select's output shape with its one symbolic dimension as -1; None if several are symbolic."""
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return None
    shape = [d if isinstance(d, int) else -1 for d in val.shape]
    return shape if shape.count(-1) <= 1 else None


def _traced_value(node) -> torch.Tensor | None:
    """The traced value of a tensor, looking through the q / dq nodes convert added (they have none)."""
    for _ in range(4):
        if not isinstance(node, Node):
            return None
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            return val
        if not (node.op == "call_function" and node.target in QDQ_OPS):
            return None
        node = node.args[0]
    return None


class ReplaceSelectWithSlicePass(PassBase):
    """Fires on `select.int` of a float tensor with a constant index, whose output has at most one
    symbolic dimension. Leaves alone selects of integer tensors (masks, indices) and outputs with
    several symbolic dimensions (XNNPACK reshapes infer only one).
    """

    def call(self, graph_module: GraphModule) -> PassResult:
        modified = False
        for node in list(graph_module.graph.nodes):
            if node.op != "call_function" or node.target != aten.select.int:
                continue
            source, dim, index = node.args
            out = node.meta.get("val")
            shape = _new_shape(node)
            if shape is None or not out.dtype.is_floating_point or not isinstance(index, int):
                continue
            if index < 0:
                val = _traced_value(source)
                size = val.shape[dim] if isinstance(val, torch.Tensor) else None
                if not isinstance(size, int):
                    continue
                index += size
            start = index
            with graph_module.graph.inserting_before(node):
                piece = graph_module.graph.call_function(aten.slice.Tensor, (source, dim, start, start + 1))
                flat = graph_module.graph.call_function(aten.view.default, (piece, shape))
            piece.meta.update({k: v for k, v in node.meta.items() if k != "val"})
            flat.meta.update(node.meta)
            node.replace_all_uses_with(flat)
            graph_module.graph.erase_node(node)
            modified = True
        if modified:
            graph_module.recompile()
        return PassResult(graph_module, modified)
