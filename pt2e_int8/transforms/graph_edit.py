"""Small graph edits the transforms and references share: read and replace constants, add a
constant, point calls at another function.

Constants are replaced, never changed in place: the exported GraphModule's parameters may share
storage with the user's float model, which must come out of `quantize` unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.fx import GraphModule, Node

from pt2e_int8.decision import keep_float

# Meta copied from an anchor node onto nodes a transform adds next to it, so the new node
# resolves to the same module scope (set_module_name) and points to the same source line.
_SCOPE_META = ("nn_module_stack", "stack_trace")


def constant(gm: GraphModule, node) -> torch.Tensor | None:
    """The tensor behind a `get_attr` node, or None when `node` is not one."""
    if not isinstance(node, Node) or node.op != "get_attr":
        return None
    value = _owner_and_name(gm, node.target)
    return getattr(*value).detach() if value is not None else None


def sole_user_constant(gm: GraphModule, node, user: Node) -> bool:
    """Whether `node` is a constant read only by `user` (no other node reads the same attribute)."""
    if constant(gm, node) is None or set(node.users) != {user}:
        return False
    return sum(1 for n in gm.graph.nodes if n.op == "get_attr" and n.target == node.target) == 1


def replace_constant(gm: GraphModule, node: Node, value: torch.Tensor) -> None:
    """Point the attribute behind get_attr `node` at a new tensor (same kind: parameter or buffer)."""
    owner, name = _owner_and_name(gm, node.target)
    old = getattr(owner, name)
    value = value.detach().to(old.dtype)
    if isinstance(old, torch.nn.Parameter):
        setattr(owner, name, torch.nn.Parameter(value, requires_grad=old.requires_grad))
    elif name in owner._buffers:
        owner._buffers[name] = value
    else:  # a plain tensor attribute (a lifted constant)
        setattr(owner, name, value)


def add_constant(gm: GraphModule, prefix: str, value: torch.Tensor, before: Node, like: Node) -> Node:
    """Register `value` as a buffer of `gm` and return a get_attr node for it, placed before `before`.

    `like` is any node with a fake tensor value: its fake mode gives the new node its `val` meta,
    which the annotators read (shape, dtype).
    """
    name, i = prefix, 0
    while hasattr(gm, name):
        i += 1
        name = f"{prefix}_{i}"
    gm.register_buffer(name, value.detach().clone())
    with gm.graph.inserting_before(before):
        attr = gm.graph.get_attr(name)
    attr.meta["val"] = like.meta["val"].fake_mode.from_tensor(value, static_shapes=True)
    return attr


def copy_scope(src: Node, dst: Node) -> None:
    for key in _SCOPE_META:
        if key in src.meta:
            dst.meta[key] = src.meta[key]


def insert_float_multiply(gm: GraphModule, producer: Node, consumers: list[Node], factor: torch.Tensor,
                          prefix: str, reason: str, scope: Node) -> Node:
    """`consumers` read `producer * factor` (a new constant) instead of `producer`; the multiply is
    kept float with `reason` (pt2e_int8.decision.keep_float) and carries `scope`'s module scope."""
    first = min(consumers, key=lambda n: list(gm.graph.nodes).index(n))
    const = add_constant(gm, prefix, factor, before=first, like=producer)
    with gm.graph.inserting_after(const):
        mul = gm.graph.call_function(torch.ops.aten.mul.Tensor, (producer, const))
    mul.meta["val"] = producer.meta["val"]
    copy_scope(scope, mul)
    keep_float(mul, reason)
    for user in consumers:
        user.replace_input_with(producer, mul)
    return mul


def retarget(gm: GraphModule, match: Callable[[Node], bool], replacement: Callable) -> bool:
    """Point every `call_function` node of `gm` that `match` accepts at `replacement`, in place;
    whether any was. The caller recompiles (references swap an op for the kernel an artifact runs).

    Example:
        retarget(gm, lambda n: n.target == aten.softmax.int, ort_softmax)
    """
    nodes = [n for n in gm.graph.nodes if n.op == "call_function" and match(n)]
    for node in nodes:
        node.target = replacement
    return bool(nodes)


def _owner_and_name(gm: GraphModule, target: str):
    *path, name = target.split(".")
    try:
        owner = gm.get_submodule(".".join(path)) if path else gm
    except AttributeError:
        return None
    if not hasattr(owner, name) or not isinstance(getattr(owner, name), torch.Tensor):
        return None
    return owner, name
