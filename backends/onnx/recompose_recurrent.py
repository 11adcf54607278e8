"""RecomposeRecurrentPass: put the fused LSTM / GRU / RNN op back before ONNX export.

    linear(x, W_ih) ; per step: linear(h, W_hh) + gates (int8 linears, q/dq around them)
        ⇒  aten.lstm(x, [h0, c0], [W_ih, W_hh, b_ih, b_hh] dequantized)      → one ONNX LSTM node

Why: the core unrolls recurrent ops into linears before annotation (pt2e_int8/transforms/
decompose_recurrent.py), which makes the .pte 7-16x faster than ExecuTorch's float LSTM. ONNX
Runtime is the other way round: its fused LSTM kernel beats per-step int8 linears, whose 49
steps pay a DynamicQuantizeLinear or Q/DQ pair each (bench/recurrent.md, LSTM 40→128 over 49
steps, 2 threads: fused float 0.34 ms, int8 dynamic linears 0.97 ms, int8 static 1.44 ms). So the
ONNX file runs the fused op in float, with the weights as quantized (rounded to the int8 grid),
and placement says so. The nodes to rebuild it from are the ones the transform tagged
(`RECURRENT_TAG` in node.meta["custom"]: projections, initial-state slices, results).
"""

from __future__ import annotations

import copy
import operator
from collections import defaultdict

import torch
from torch.fx import GraphModule, Node
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from pt2e_int8.ops import layer_operands
from pt2e_int8.qdq import DEQUANTIZE_OPS, QUANTIZE_OPS
from pt2e_int8.transforms.decompose_recurrent import RECURRENT_TAG

aten = torch.ops.aten
_FUSED = {"lstm": aten.lstm.input, "gru": aten.gru.input, "rnn_tanh": aten.rnn_tanh.input,
          "rnn_relu": aten.rnn_relu.input}
FUSED_DETAIL = ("fused back into ONNX Runtime's {op} op (float compute on the int8-rounded weights): faster "
                "there than per-step int8 linears (bench/recurrent.md)")


def _tag(node: Node) -> dict | None:
    return (node.meta.get("custom") or {}).get(RECURRENT_TAG)


def _constant(gm: GraphModule, node) -> torch.Tensor | None:
    """The value of a constant operand: a parameter, or a dequantize of constants (int8 weights)."""
    if node is None:
        return None
    if node.op == "get_attr":
        value = gm
        for part in str(node.target).split("."):
            value = getattr(value, part)
        return value.detach()
    if node.op == "call_function" and node.target in DEQUANTIZE_OPS:
        args = [_constant(gm, a) if isinstance(a, Node) else a for a in node.args]
        if any(a is None for a in args):
            return None
        return node.target(*args, **node.kwargs).detach()
    return None


def _float_source(node: Node) -> Node:
    """The float tensor behind an activation's quantize → dequantize (static or dynamic alike:
    the quantize's input is the float tensor either way)."""
    while node.op == "call_function" and node.target in DEQUANTIZE_OPS | QUANTIZE_OPS:
        node = node.args[0]
    return node


class _Region:
    def __init__(self) -> None:
        self.linears: dict[tuple[int, int, str], Node] = {}
        self.inits: dict[int, Node] = {}
        self.results: dict[int, Node] = {}
        self.members: list[Node] = []

    @property
    def spec(self) -> dict:
        return _tag(next(iter(self.results.values())))["spec"]


def _regions(gm: GraphModule) -> dict[str, _Region]:
    regions: dict[str, _Region] = defaultdict(_Region)
    for node in gm.graph.nodes:
        tag = _tag(node)
        if tag is None:
            continue
        region = regions[tag["id"]]
        region.members.append(node)
        if "kind" in tag:
            region.linears.setdefault((tag["layer"], tag["direction"], tag["kind"]), node)
        elif "init" in tag:
            region.inits[tag["init"]] = node
        elif "result" in tag:
            region.results[tag["result"]] = node
    return regions


def _params(gm: GraphModule, region: _Region) -> list[torch.Tensor] | None:
    """[W_ih, W_hh, (b_ih, b_hh)] per layer and direction, dequantized; None if one is missing or the
    op cannot be one ONNX node (an LSTM with proj_size)."""
    spec, out = region.spec, []
    for layer in range(spec["num_layers"]):
        for direction in range(2 if spec["bidirectional"] else 1):
            ih, hh = region.linears.get((layer, direction, "ih")), region.linears.get((layer, direction, "hh"))
            if ih is None or hh is None:  # one step from a zero state has no hidden linear to read W_hh from
                return None
            (_, w_ih, b_ih), (_, w_hh, b_hh) = layer_operands(ih), layer_operands(hh)
            group = [_constant(gm, w_ih), _constant(gm, w_hh)]
            if spec["has_biases"]:
                group += [_constant(gm, b_ih), _constant(gm, b_hh)]
            if (layer, direction, "hr") in region.linears:  # ONNX's LSTM has no output projection
                return None
            if any(t is None for t in group):
                return None
            out += [t.float().contiguous() for t in group]
    return out


def _recompose(gm: GraphModule, key: str, region: _Region, params: list[torch.Tensor]) -> None:
    spec, graph = region.spec, gm.graph
    first = region.linears[(0, 0, "ih")]
    x = _float_source(layer_operands(first).act)
    layers, directions = spec["num_layers"], 2 if spec["bidirectional"] else 1
    hidden = params[1].shape[1]  # W_hh is [gates * hidden_size, h_out]: h_out = proj_size or hidden_size
    cell = params[1].shape[0] // {"lstm": 4, "gru": 3}.get(spec["op"], 1)
    with graph.inserting_before(first):
        names = []
        for i, tensor in enumerate(params):
            name = f"_recomposed_{key}_{i}"
            gm.register_buffer(name, tensor)
            names.append(graph.get_attr(name))
        batch = graph.call_function(aten.sym_size.int, (x, 0 if spec["batch_first"] else 1))

        def state(index: int, width: int) -> Node:
            if index in region.inits:
                return region.inits[index].args[0]
            return graph.call_function(aten.zeros.default, ([layers * directions, batch, width],),
                                       {"dtype": torch.float32})

        hx = [state(0, hidden), state(1, cell)] if spec["states"] == 2 else state(0, hidden)
        fused = graph.call_function(_FUSED[spec["op"]], (x, hx, names, spec["has_biases"], layers, 0.0, False,
                                                         spec["bidirectional"], spec["batch_first"]))
        for k, result in region.results.items():
            item = graph.call_function(operator.getitem, (fused, k))
            result.replace_all_uses_with(item)
    graph.eliminate_dead_code()


class RecomposeRecurrentPass(PassBase):
    """Fires on the nodes DecomposeRecurrentPass tagged, when every projection's weight can be read
    (from an int8 constant behind a dequantize, or a float parameter). Leaves alone graphs without
    tags, a one-step sequence from a zero state (it has no hidden linear to read W_hh from) and an
    LSTM with proj_size (ONNX's LSTM has no projection): those stay per-step linears.
    `recomposed` maps each rebuilt op's id to its ONNX op name, for placement.
    """

    def __init__(self) -> None:
        super().__init__()
        self.recomposed: dict[str, str] = {}

    def call(self, graph_module: GraphModule) -> PassResult:
        for key, region in _regions(graph_module).items():
            params = _params(graph_module, region) if region.results and (0, 0, "ih") in region.linears else None
            if params is None:
                continue
            _recompose(graph_module, key, region, params)
            self.recomposed[key] = {"lstm": "LSTM", "gru": "GRU"}.get(region.spec["op"], "RNN")
        if self.recomposed:
            graph_module.recompile()
        return PassResult(graph_module, bool(self.recomposed))


def recompose_recurrent(model: torch.nn.Module) -> tuple[torch.nn.Module, dict[str, str]]:
    """A copy of `model` with its recurrent ops fused back (the model itself when there are none),
    and {converted-graph linear node name: ONNX op it went into}."""
    if not isinstance(model, GraphModule) or not any(_tag(n) for n in model.graph.nodes):
        return model, {}
    gm = copy.deepcopy(model)
    owners = {n.name: _tag(n)["id"] for n in gm.graph.nodes if _tag(n) and "kind" in _tag(n)}
    rewrite = RecomposeRecurrentPass()
    gm = rewrite(gm).graph_module
    return gm, {name: rewrite.recomposed[key] for name, key in owners.items() if key in rewrite.recomposed}

