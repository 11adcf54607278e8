"""Decompose LSTM / GRU / RNN ops into their projections (linear) and elementwise gates.

    lstm(x, [h0, c0], params)  ⇒  xp = linear(x, W_ih, b_ih)                  (every time step at once)
                                  for t in 0..T-1:  g = xp[t:t+1] + linear(h, W_hh, b_hh)
                                      i, f, c̃, o = slices of g
                                      c = σ(f)·c + σ(i)·tanh(c̃);  h = σ(o)·tanh(c)   (· linear(h, W_hr))
    gru(x, h0, params)         ⇒  xp = linear(x, W_ih, b_ih); per step hp = linear(h, W_hh, b_hh),
                                  r = σ(xp_r + hp_r), z = σ(xp_z + hp_z), n = tanh(xp_n + r·hp_n),
                                  h = (h - n)·z + n
    rnn_tanh / rnn_relu(x, h0) ⇒  h = act(xp[t] + linear(h, W_hh, b_hh))

Why: one fused recurrent op has no int8 kernel in XNNPACK or ONNX Runtime, so the whole
layer ran in float and coverage could only say so. Written as linears, its input and
hidden projections are layers the linear annotator quantizes (static or dynamic) like any
other, in both artifacts. The gates follow ATen's CPU cells op for op (`RNN.cpp`), so the
float graph computes what `aten.lstm` computes. A second reason: `to_edge`'s own GRU
decomposition goes through `chunk` and fixes the batch to the traced bound, so a GRU
`.pte` rejected every other batch; slices keep the batch symbolic.

Every step keeps a time dimension of 1 (slices, not `select`, and `cat` to stack the steps):
XNNPACK has no select, and 49 selects split an LSTM .pte into one delegate call per step.
The time loop is unrolled, so the sequence length must be static (the batch may be
dynamic). Packed sequences (`aten.lstm.data`) and a symbolic sequence length are left alone.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch._guards import detect_fake_mode
from torch.fx import GraphModule, Node
from torch.fx.passes.infra.pass_base import PassBase, PassResult
from torch.fx.traceback import NodeSource, NodeSourceAction

from pt2e_int8.decision import add_note

aten = torch.ops.aten

# node.meta["custom"] key marking the nodes a backend needs to rebuild the fused op: each
# projection linear ({"layer", "direction", "kind": "ih" | "hh" | "hr"}), each initial-state slice
# ({"init": i}) and each result ({"result": k, "spec": {...}}). Custom metadata survives
# prepare / convert and torch.export.save / load. ONNX Runtime's fused LSTM beats per-step int8
# linears (bench/recurrent.md), so the ONNX backend rebuilds it (backends/onnx/recompose_recurrent.py).
RECURRENT_TAG = "pt2e_int8_recurrent"

# Metadata the new nodes inherit from the recurrent op: module path (overrides and coverage
# names resolve through it) and the user's source line.
_INHERITED_META = ("nn_module_stack", "stack_trace", "source_fn_stack", "torch_fn")


@dataclass(frozen=True)
class Cell:
    """One recurrent op: its name, how many gates per step, and how many hidden states it carries."""

    name: str  # as a user knows the module: LSTM, GRU, RNN
    gates: int  # rows of W_ih per hidden unit: 4 (LSTM), 3 (GRU), 1 (RNN)
    states: int  # 2 for LSTM (h, c), else 1
    activation: Callable | None = None  # RNN only: tanh or relu


RECURRENT_OPS: dict[torch._ops.OpOverload, Cell] = {
    aten.lstm.input: Cell("LSTM", gates=4, states=2),
    aten.gru.input: Cell("GRU", gates=3, states=1),
    aten.rnn_tanh.input: Cell("RNN", gates=1, states=1, activation=aten.tanh.default),
    aten.rnn_relu.input: Cell("RNN", gates=1, states=1, activation=aten.relu.default),
}


def unroll_blocker(node: Node) -> str | None:
    """Why a recurrent node cannot be unrolled (None when it can)."""
    x = node.args[0].meta.get("val") if isinstance(node.args[0], Node) else None
    if not isinstance(x, torch.Tensor):
        return "its input has no traced shape"
    batch_first = node.args[8]
    steps = x.shape[1] if batch_first else x.shape[0]
    if isinstance(steps, int) and steps < 1:
        return "its sequence is empty"
    if not isinstance(steps, int):
        return ("its sequence length is dynamic, so the time loop cannot be unrolled into linears; "
                "export with a static sequence length (pad to a fixed length) to quantize it")
    if not all(isinstance(p, Node) and p.op == "get_attr" for p in node.args[2]):
        return ("its weights are computed at run time, not constant parameters, so no int8 weight can be "
                "made ahead of time")
    return None


class _Builder:
    """Adds aten nodes before an anchor, each with a fake `val` and the anchor's module metadata."""

    def __init__(self, gm: GraphModule, anchor: Node) -> None:
        self.graph, self.anchor = gm.graph, anchor
        vals = [n.meta.get("val") for n in gm.graph.nodes if n.op == "placeholder"]
        self.fake_mode = detect_fake_mode([v for v in vals if isinstance(v, torch.Tensor)])
        self.meta = {k: anchor.meta[k] for k in _INHERITED_META if k in anchor.meta}
        # Provenance back to the recurrent op: placement ties delegate nodes to coverage rows by it.
        self.source = NodeSource(anchor, "DecomposeRecurrentPass", NodeSourceAction.CREATE)
        self.created: list[Node] = []

    def op(self, target, *args) -> Node:
        with self.graph.inserting_before(self.anchor):
            node = self.graph.call_function(target, args)
        node.meta.update(self.meta)
        node.meta["from_node"] = [self.source]
        self.created.append(node)
        fake_args = torch.fx.node.map_arg(args, lambda n: n.meta["val"])
        if self.fake_mode is not None:
            with self.fake_mode:
                node.meta["val"] = target(*fake_args)
        else:
            node.meta["val"] = target(*fake_args)
        return node

    def linear(self, x: Node, weight: Node, bias: Node | None, note: str, **role) -> Node:
        node = self.op(aten.linear.default, x, weight, bias)
        add_note(node, note)
        self.tag(node, **role)
        return node

    def tag(self, node: Node, **info) -> None:
        """Mark a node's part in the recurrent op (`RECURRENT_TAG`), for backends that fuse it back."""
        node.meta.setdefault("custom", {})[RECURRENT_TAG] = {"id": self.anchor.name, **info}

    def drop_unused(self) -> None:
        """Erase what was built but is not read (the final states when the model ignores them)."""
        for node in reversed(self.created):
            if not node.users:
                self.graph.erase_node(node)

    def gates(self, x: Node, hidden: int, count: int) -> list[Node]:
        """`count` slices of width `hidden` along the last dim (to_edge's chunk would fix the batch)."""
        return [self.op(aten.slice.Tensor, x, -1, i * hidden, (i + 1) * hidden) for i in range(count)]


def _add(b: _Builder, x: Node | None, y: Node | None) -> Node | None:
    """x + y where None stands for an exact zero (a zero initial state, a missing bias)."""
    if x is None or y is None:
        return y if x is None else x
    return b.op(aten.add.Tensor, x, y)


def _mul(b: _Builder, x: Node, y: Node | None) -> Node | None:
    return None if y is None else b.op(aten.mul.Tensor, x, y)


def _lstm_step(b: _Builder, xt: Node, hp: Node | None, state: list[Node | None], hidden: int,
               w_hr: Node | None, note: str, role: dict) -> list[Node]:
    i, f, g, o = b.gates(_add(b, hp, xt), hidden, 4)
    i, f, o = (b.op(aten.sigmoid.default, t) for t in (i, f, o))
    g = b.op(aten.tanh.default, g)
    c = _add(b, _mul(b, f, state[1]), b.op(aten.mul.Tensor, i, g))
    h = b.op(aten.mul.Tensor, o, b.op(aten.tanh.default, c))
    if w_hr is not None:
        h = b.linear(h, w_hr, None, note.replace("hidden projection", "output projection"), kind="hr", **role)
    return [h, c]


def _gru_step(b: _Builder, xt: Node, hp: Node | None, h: Node | None, hidden: int) -> Node:
    xr, xz, xn = b.gates(xt, hidden, 3)
    hr, hz, hn = b.gates(hp, hidden, 3) if hp is not None else (None, None, None)
    r = b.op(aten.sigmoid.default, _add(b, hr, xr))
    z = b.op(aten.sigmoid.default, _add(b, hz, xz))
    n = b.op(aten.tanh.default, _add(b, xn, _mul(b, hn, r) if hn is not None else None))
    diff = b.op(aten.sub.Tensor, h, n) if h is not None else b.op(aten.neg.default, n)  # 0 - n == -n exactly
    return b.op(aten.add.Tensor, b.op(aten.mul.Tensor, diff, z), n)


def _is_zeros(node: Node) -> bool:
    """A state built as exact zeros (what nn.LSTM / GRU / RNN do when no hx is given)."""
    if node.op != "call_function":
        return False
    if node.target in (aten.zeros.default, aten.zeros_like.default, aten.new_zeros.default):
        return True
    return node.target in (aten.full.default, aten.new_full.default) and node.args[-1] == 0


def _layer_params(node: Node, layer: int, direction: int, directions: int) -> tuple[list[Node], bool]:
    """This layer and direction's [W_ih, W_hh, (b_ih, b_hh), (W_hr)] and whether biases are in it."""
    params, has_biases, layers = node.args[2], node.args[3], node.args[4]
    per = len(params) // (layers * directions)
    return list(params[(layer * directions + direction) * per:][:per]), has_biases


def _one_direction(b: _Builder, cell: Cell, node: Node, x: Node, init: list[Node | None], layer: int,
                   direction: int, directions: int, time_dim: int, steps: int) -> tuple[list[Node], list[Node]]:
    """Run one layer in one direction; returns (per-step outputs in time order, final states)."""
    params, has_biases = _layer_params(node, layer, direction, directions)
    w_ih, w_hh = params[0], params[1]
    b_ih, b_hh = (params[2], params[3]) if has_biases else (None, None)
    w_hr = params[4 if has_biases else 2] if len(params) > (4 if has_biases else 2) else None
    hidden = w_hh.meta["val"].shape[0] // cell.gates  # gate width; h is narrower with proj_size
    where = f"from {cell.name} {_module_path(node)}, layer {layer}" + (" reverse" if direction else "")
    role = {"layer": layer, "direction": direction}
    xp = b.linear(x, w_ih, b_ih, f"{where}: input projection, all {steps} steps in one linear", kind="ih", **role)
    hidden_note = f"{where}: hidden projection, one linear per step ({steps} steps)"
    # A state that is still None is exactly zero: its hidden projection is just the bias,
    # so no linear (and no int8 grid spent on an all-zero input) at that step.
    state, outputs = list(init), []
    order = range(steps - 1, -1, -1) if direction else range(steps)
    for t in order:
        xt = b.op(aten.slice.Tensor, xp, time_dim, t, t + 1)  # keeps the time dim: XNNPACK has no select
        hp = b.linear(state[0], w_hh, b_hh, hidden_note, kind="hh", **role) if state[0] is not None else b_hh
        if cell.name == "LSTM":
            state = _lstm_step(b, xt, hp, state, hidden, w_hr, hidden_note, role)
        elif cell.name == "GRU":
            state = [_gru_step(b, xt, hp, state[0], hidden)]
        else:
            state = [b.op(cell.activation, _add(b, hp, xt))]
        outputs.append(state[0])
    if direction:
        outputs.reverse()
    return outputs, state


def _init_slice(b: _Builder, hx: Node, k: int, index: int) -> Node:
    node = b.op(aten.slice.Tensor, hx, 0, k, k + 1)
    if k == 0:
        b.tag(node, init=index)  # how the ONNX backend finds hx again
    return node


def _to_step_layout(b: _Builder, state: Node, batch_first: bool) -> Node:
    """[1, B, H] (how hx stacks states) ⇄ [B, 1, H] (a batch-first step); its own inverse."""
    return b.op(aten.permute.default, state, [1, 0, 2]) if batch_first else state


def _module_path(node: Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else node.name


def _decompose(gm: GraphModule, node: Node, cell: Cell) -> None:
    x, hx = node.args[0], node.args[1]
    layers, directions = node.args[4], 2 if node.args[7] else 1
    dropout, train, batch_first = node.args[5], node.args[6], node.args[8]
    time_dim = 1 if batch_first else 0
    steps = x.meta["val"].shape[time_dim]
    b = _Builder(gm, node)
    inits = list(hx) if isinstance(hx, list | tuple) else [hx]  # [h0, c0] for LSTM, h0 otherwise
    finals: list[list[Node]] = [[] for _ in range(cell.states)]
    layer_in = x
    for layer in range(layers):
        per_dir = []
        for d in range(directions):
            k = layer * directions + d
            init = [None if _is_zeros(s) else _to_step_layout(b, _init_slice(b, s, k, i), batch_first)
                    for i, s in enumerate(inits)]
            outputs, state = _one_direction(b, cell, node, layer_in, init, layer, d, directions, time_dim, steps)
            per_dir.append(b.op(aten.cat.default, outputs, time_dim))
            for i, s in enumerate(state):
                finals[i].append(_to_step_layout(b, s, batch_first))  # [1, B, H], as h_n / c_n stack them
        layer_in = per_dir[0] if directions == 1 else b.op(aten.cat.default, per_dir, -1)
        if dropout and train and layer < layers - 1:
            layer_in = b.op(aten.dropout.default, layer_in, dropout, True)
    stacked = [b.op(aten.cat.default, f, 0) for f in finals]
    results = [layer_in, *stacked]
    spec = {"op": node.target.__name__.split(".")[0], "has_biases": node.args[3], "num_layers": layers,
            "bidirectional": directions == 2, "batch_first": batch_first, "states": cell.states}
    for k, result in enumerate(results):
        b.tag(result, result=k, spec=spec)
    for user in list(node.users):
        if user.op == "call_function" and user.target is operator.getitem:
            user.replace_all_uses_with(results[user.args[1]])
            gm.graph.erase_node(user)
    gm.graph.erase_node(node)
    b.drop_unused()


class DecomposeRecurrentPass(PassBase):
    """Fires on `aten.lstm.input`, `aten.gru.input`, `aten.rnn_tanh.input` and `aten.rnn_relu.input`
    with a static sequence length and constant weights (any batch, layers, directions, biases,
    LSTM projections). Leaves alone packed sequences (`.data` overloads), a dynamic sequence
    length and weights that are not parameters; coverage then gives the reason.
    """

    def call(self, graph_module: GraphModule) -> PassResult:
        modified = False
        for node in list(graph_module.graph.nodes):
            cell = RECURRENT_OPS.get(node.target) if node.op == "call_function" else None
            if cell is None or unroll_blocker(node) is not None:
                continue
            if any(u.op != "call_function" or u.target is not operator.getitem for u in node.users):
                continue
            _decompose(graph_module, node, cell)
            modified = True
        return PassResult(graph_module, modified)
