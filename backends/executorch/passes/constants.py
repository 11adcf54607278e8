"""Reading and adding constant tensors of a converted GraphModule (get_attr nodes).

Shared by the passes that fold a dequantize of a constant into a float constant.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node


def is_constant(node) -> bool:
    return isinstance(node, Node) and node.op == "get_attr"


def constant_value(gm: GraphModule, node: Node) -> torch.Tensor:
    """The tensor a get_attr node reads (dotted targets walk submodules)."""
    obj = gm
    for part in node.target.split("."):
        obj = getattr(obj, part)
    return obj


def evaluate_on_constants(gm: GraphModule, node: Node) -> torch.Tensor:
    """Run a call_function node whose tensor inputs are all get_attr constants."""
    args = [constant_value(gm, a) if is_constant(a) else a for a in node.args]
    kwargs = {k: constant_value(gm, v) if is_constant(v) else v for k, v in node.kwargs.items()}
    return node.target(*args, **kwargs)


def replace_with_constant(gm: GraphModule, node: Node, value: torch.Tensor, suffix: str) -> Node:
    """Register `value` as a buffer named after `node` and point its users at a get_attr of it."""
    name = f"_{node.name}_{suffix}"
    assert not hasattr(gm, name), f"constant name {name} already taken"
    gm.register_buffer(name, value.detach().clone().contiguous())
    with gm.graph.inserting_before(node):
        const = gm.graph.get_attr(name)
    const.meta.update({k: v for k, v in node.meta.items() if k in ("stack_trace", "nn_module_stack")})
    node.replace_all_uses_with(const)
    gm.graph.erase_node(node)
    return const


def erase_dead_constants(gm: GraphModule) -> None:
    """Drop get_attr nodes nobody reads any more (the int8 tensor a fold replaced)."""
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" and not node.users:
            gm.graph.erase_node(node)
