"""Follow an activation's last-dim channels back to the op that wrote them, through attention.

    linear_v → view[B, T, H, D] → transpose(1, 2) → matmul(P, ·) → transpose(1, 2) → reshape[B, T, C]

Channel c = h·D + d of the context that BERT's attention-output projection reads is channel c of
the value projection's output: the view splits it into (head h, column d), the transposes move the
head dim and back, and `matmul(P, V)` mixes rows (tokens) but keeps every column of V. So a
per-channel scale of the context is the same scale on the value projection's output channels,
and SmoothQuant can fold its division into that linear's rows instead of inserting a multiply
(`smooth_quant.SmoothActivationsPass`).

The walk tracks which dims of each tensor hold the channel (major to minor) and only crosses ops
that provably keep it: identities (clone, contiguous, eval dropout), transpose / permute, a view
or reshape that splits or merges the trailing dims with the leading shape unchanged, and the
right operand of matmul / bmm (columns kept, the contracted dim never a channel dim). Every node
on the way must have one user, so the fold changes nothing else.
"""

from __future__ import annotations

import torch
from torch.fx import Node

aten = torch.ops.aten

IDENTITIES = frozenset({aten.clone.default, aten.contiguous.default, aten.dropout.default, aten.alias.default})
RESHAPES = frozenset({aten.view.default, aten.reshape.default, aten._unsafe_view.default})
MATMULS = frozenset({aten.matmul.default, aten.bmm.default})


def _shape(node: Node) -> tuple | None:
    val = node.meta.get("val") if isinstance(node, Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def _same(a: tuple, b: tuple) -> bool:
    """Equal shapes, symbolic sizes compared by expression."""
    return len(a) == len(b) and all(str(x) == str(y) for x, y in zip(a, b, strict=True))


def _through_reshape(chan: list[int], out: tuple, inp: tuple) -> list[int] | None:
    n_out, n_in = len(out), len(inp)
    if chan == [n_out - 1] and n_in == n_out + 1 and _same(inp[:-2], out[:-1]):  # merged (H, D) -> C
        return [n_in - 2, n_in - 1]
    if chan == [n_out - 2, n_out - 1] and n_in == n_out - 1 and _same(inp[:-1], out[:-2]):  # split C -> (H, D)
        return [n_in - 1]
    if n_in == n_out and _same(inp, out):
        return chan
    return None


def _step_back(node: Node, chan: list[int]) -> tuple[Node, list[int]] | None:
    """(input node, its channel dims) for a channel-keeping `node`, else None."""
    if node.op != "call_function":
        return None
    target, args, out = node.target, node.args, _shape(node)
    if out is None or not args or not isinstance(args[0], Node):
        return None
    if target in IDENTITIES:
        return args[0], chan
    if target == aten.transpose.int:
        d0, d1 = (d % len(out) for d in args[1:3])
        swap = {d0: d1, d1: d0}
        return args[0], [swap.get(d, d) for d in chan]
    if target == aten.permute.default:
        perm = [d % len(out) for d in args[1]]
        return args[0], [perm[d] for d in chan]
    if target in RESHAPES:
        inp = _shape(args[0])
        mapped = _through_reshape(chan, out, inp) if inp is not None else None
        return (args[0], mapped) if mapped is not None else None
    if target in MATMULS and len(args) == 2 and isinstance(args[1], Node):
        x = _shape(args[1])
        if x is None or len(x) != len(out) or len(out) - 2 in chan or not _same(x[:-2], out[:-2]):
            return None
        return args[1], chan  # columns of the right operand are the result's columns
    return None


def channel_source(producer: Node) -> Node | None:
    """The node whose output channels are `producer`'s last-dim channels, in order, reached
    through channel-keeping ops each read only by the next; None when there is no such path
    (or `producer` is its own source)."""
    out = _shape(producer)
    if out is None or not out:
        return None
    node, chan = producer, [len(out) - 1]
    while True:
        step = _step_back(node, chan)
        if step is None:
            return None
        node, chan = step
        shape = _shape(node)
        if shape is None or len(node.users) != 1:
            return None
        if node.op == "call_function" and node.target == aten.linear.default and chan == [len(shape) - 1]:
            return node
