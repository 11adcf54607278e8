"""Name the dynamic batch -1 in flatten / view / reshape, so XNNPACK runs them under a dynamic batch.

    flatten(x, 1)                  ⇒  view(x, [-1, C*H*W])
    view(x, [sym_size(x, 0), 64])  ⇒  view(x, [-1, 64])

Why: with a dynamic batch, torch.export writes the reshape's target shape with the batch as a
symbolic size, and ExecuTorch 1.5.1's XNNPACK partitioner rejects any view whose shape holds a
symbol ("invalid dtype" for the symbolic argument, "Symbolic reshape is not supported"). The
flatten before a CNN's classifier then runs on portable kernels between two delegate calls, and
`export_pte`'s shape check falls back to a static batch. XNNPACK's static_reshape takes one
inferred (-1) dimension, which is exactly a batch that is the only symbolic size.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from backends.executorch.passes.select_to_slice import traced_value

aten = torch.ops.aten
# Ops whose result is the input's data in a new shape (view when the input is contiguous).
RESHAPES = (aten.flatten.using_ints, aten.view.default, aten.reshape.default)


def _input_val(node: Node) -> torch.Tensor | None:
    return traced_value(node.args[0])


def _flatten_shape(node: Node) -> list[int] | None:
    """flatten(x, start, end) with start >= 1 as a view shape with the batch (dim 0) as -1; None when
    the flattened dims are not all static or the batch is among them."""
    val = _input_val(node)
    if val is None or val.dim() < 2:
        return None
    start = node.args[1] if len(node.args) > 1 else 0
    end = node.args[2] if len(node.args) > 2 else -1
    start, end = start % val.dim(), end % val.dim()
    rest = list(val.shape[1:])
    if start < 1 or not all(isinstance(d, int) for d in rest):
        return None
    merged = 1
    for d in val.shape[start:end + 1]:
        merged *= d
    return [-1, *val.shape[1:start], merged, *val.shape[end + 1:]]


def _symbolic_view_shape(node: Node) -> list[int] | None:
    """view / reshape whose shape argument holds symbolic sizes: the output shape with its one
    symbolic size as -1; None if it is already ints or several sizes are symbolic."""
    if all(isinstance(d, int) for d in node.args[1]):
        return None
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return None
    shape = [d if isinstance(d, int) else -1 for d in val.shape]
    return shape if shape.count(-1) == 1 else None


def _new_shape(node: Node) -> list[int] | None:
    return _flatten_shape(node) if node.target == aten.flatten.using_ints else _symbolic_view_shape(node)


class ReplaceSymbolicReshapePass(PassBase):
    """Fires on flatten(x, start >= 1) of a contiguous tensor with static non-batch sizes, and on
    view / reshape of a contiguous tensor whose shape argument holds one symbolic size. Leaves
    alone flattens that merge the batch, reshapes already written with ints, non-contiguous inputs
    (a view of them would not be the same tensor) and several symbolic sizes (XNNPACK infers one).
    """

    def call(self, graph_module: GraphModule) -> PassResult:
        modified = False
        for node in list(graph_module.graph.nodes):
            if node.op != "call_function" or node.target not in RESHAPES:
                continue
            shape, val = _new_shape(node), _input_val(node)
            if shape is None or val is None or not val.is_contiguous():
                continue
            with graph_module.graph.inserting_before(node):
                view = graph_module.graph.call_function(aten.view.default, (node.args[0], shape))
            view.meta.update(node.meta)
            node.replace_all_uses_with(view)
            graph_module.graph.erase_node(node)
            modified = True
        if modified:
            graph_module.graph.eliminate_dead_code()
            graph_module.recompile()
        return PassResult(graph_module, modified)
