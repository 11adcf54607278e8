"""Replace chunk / split along a non-batch dimension by one slice per output.

    getitem(chunk(x, 3, -1), i)  ⇒  slice(x, -1, i*n, (i+1)*n)

Why: to_edge turns split into split_with_sizes_copy and, doing so, specializes a dynamic
batch dimension to the traced size (the .pte then rejects any other batch: measured with
ExecuTorch 1.5.1 on `x.chunk(3, -1)` after a linear). Slices keep the batch symbolic.
"""

from __future__ import annotations

import operator

import torch
from torch.fx import GraphModule, Node
from torch.fx.passes.infra.pass_base import PassBase, PassResult

aten = torch.ops.aten
_SPLITS = (aten.chunk.default, aten.split.Tensor, aten.split_with_sizes.default, aten.tensor_split.sections)


def _dim(node: Node) -> int:
    if len(node.args) > 2:
        return node.args[2]
    return node.kwargs.get("dim", 0)


def _output_sizes(node: Node, dim: int) -> list[int] | None:
    vals = node.meta.get("val")
    if not isinstance(vals, list | tuple) or not vals:
        return None
    sizes = [v.shape[dim] for v in vals if isinstance(v, torch.Tensor)]
    if len(sizes) != len(vals) or not all(isinstance(s, int) for s in sizes):
        return None  # a symbolic split size: leave it to to_edge
    return sizes


class ReplaceSplitWithSlicesPass(PassBase):
    """Fires on chunk/split over a non-batch dimension with static sizes whose outputs are
    only read through getitem. Leaves alone splits over dim 0 (the batch) or with symbolic
    sizes.
    """

    def call(self, graph_module: GraphModule) -> PassResult:
        modified = False
        for node in list(graph_module.graph.nodes):
            if node.op != "call_function" or node.target not in _SPLITS:
                continue
            source, dim = node.args[0], _dim(node)
            vals = node.meta.get("val")
            rank = vals[0].dim() if isinstance(vals, list | tuple) and vals else None
            if rank is None or dim % rank == 0:
                continue
            sizes = _output_sizes(node, dim)
            if sizes is None or not all(u.op == "call_function" and u.target is operator.getitem
                                        for u in node.users):
                continue
            starts = [sum(sizes[:i]) for i in range(len(sizes))]
            for user in list(node.users):
                i = user.args[1]
                with graph_module.graph.inserting_before(user):
                    piece = graph_module.graph.call_function(
                        aten.slice.Tensor, (source, dim, starts[i], starts[i] + sizes[i])
                    )
                piece.meta.update(user.meta)
                user.replace_all_uses_with(piece)
                graph_module.graph.erase_node(user)
            graph_module.graph.erase_node(node)
            modified = True
        return PassResult(graph_module, modified)
