"""Per-layer numeric debugger: how far each layer's output is from float, and whose fault it is.

For every coverage row of a converted model, two errors of the layer's output (as its consumers
see it, output rounding included) against the float model, over the given inputs:

    accumulated  the whole int8 model up to here (what the layer really receives and returns)
    local        this layer alone: the converted graph evaluated with every float-model value
                 substituted for its int8 counterpart, so only the layer's own input, weight and
                 output quantization count

A layer with a bad *local* error is a cause; a bad accumulated error with a good local one is
inherited from upstream. Node matching uses torchao's PT2E numeric-debug handles:
`prepare_for_propagation_comparison` puts an output logger on every node, keyed by the node's
source in the original export (`from_node`), and `extract_results_from_loggers` collects them.
Both graphs must come from one export (pass `float_graph`); a float `nn.Module` is re-exported,
and the two are then matched by source-node name, which torch.export assigns deterministically.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import torch
from torch.fx import GraphModule, Node
from torchao.quantization.pt2e import (
    extract_results_from_loggers,
    prepare_for_propagation_comparison,
)

from pt2e_int8.capture import as_input_tuple, export_model
from pt2e_int8.coverage_report import coverage
from pt2e_int8.debug.anchors import layer_anchor, layer_output, output_step
from pt2e_int8.errors import UserInputError
from pt2e_int8.qdq import CHOOSE_QPARAMS_OPS, QDQ_OPS
from pt2e_int8.text_table import text_table


class ModelMismatchError(UserInputError):
    """The converted model was not made from the given float model."""


@dataclass
class RunningError:
    """Running SQNR and max error over batches."""

    signal: float = 0.0
    noise: float = 0.0
    max_abs: float = 0.0
    seen: bool = False

    def add(self, ref: torch.Tensor, got: torch.Tensor) -> None:
        ref, got = ref.detach().double(), got.detach().double()
        diff = ref - got
        self.signal += ref.pow(2).sum().item()
        self.noise += diff.pow(2).sum().item()
        self.max_abs = max(self.max_abs, diff.abs().max().item() if diff.numel() else 0.0)
        self.seen = True

    @property
    def sqnr(self) -> float | None:
        if not self.seen:
            return None
        if self.noise == 0:
            return math.inf
        return -math.inf if self.signal == 0 else 10 * math.log10(self.signal / self.noise)


@dataclass(frozen=True)
class LayerError:
    """One coverage row's errors against float (None where the row has no comparable output)."""

    name: str
    op: str
    node: str
    scheme: str | None  # None: float
    step: float | None  # the layer's output quantization step; None for a float output
    acc_sqnr: float | None  # dB, the whole int8 model up to this layer
    acc_max_error: float | None
    local_sqnr: float | None  # dB, this layer alone with float inputs
    local_max_error: float | None

    def steps(self, error: float | None) -> float | None:
        return error / self.step if error is not None and self.step else None


def _db(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "exact" if math.isinf(value) and value > 0 else f"{value:.1f}"


def json_number(value: float | None) -> float | None:
    """JSON has no inf: an exact match (inf dB) is written as null with max error 0."""
    return value if value is None or math.isfinite(value) else None


@dataclass
class LayerErrorReport:
    layers: list[LayerError]
    batches: int
    notes: list[str] = field(default_factory=list)

    def worst(self, k: int = 5, *, by: str = "local") -> list[LayerError]:
        """The k layers with the lowest SQNR (`by`: "local" or "acc")."""
        key = f"{by}_sqnr"
        rated = [r for r in self.layers if getattr(r, key) is not None and r.scheme is not None]
        return sorted(rated, key=lambda r: getattr(r, key))[:k]

    def to_dict(self) -> dict:
        rows = []
        for r in self.layers:
            d = asdict(r)
            for k in ("acc_sqnr", "local_sqnr"):
                d[k] = json_number(d[k])
            d["acc_max_error_steps"] = r.steps(r.acc_max_error)
            d["local_max_error_steps"] = r.steps(r.local_max_error)
            rows.append(d)
        return {"layers": rows, "batches": self.batches, "notes": list(self.notes)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table_rows(self) -> list[tuple]:
        rows = []
        for r in self.layers:
            steps = r.steps(r.local_max_error)
            rows.append((r.name, r.op, r.scheme or "float", _db(r.acc_sqnr),
                         "n/a" if r.acc_max_error is None else f"{r.acc_max_error:.3g}",
                         _db(r.local_sqnr),
                         "n/a" if r.local_max_error is None else f"{r.local_max_error:.3g}",
                         "" if steps is None else f"{steps:.1f}"))
        return rows

    def __str__(self) -> str:
        header = ("layer", "op", "scheme", "acc SQNR dB", "acc max err", "local SQNR dB", "local max err",
                  "local err steps")
        text = text_table(header, self.table_rows(), right=(3, 4, 5, 6, 7))
        worst = self.worst(3)
        if worst:
            text += "\nworst local SQNR: " + ", ".join(f"{r.name} ({_db(r.local_sqnr)} dB)" for r in worst)
        return text


# -- matching ---------------------------------------------------------------------------
def _logger_infos(logged: GraphModule) -> dict[str, object]:
    """Converted-graph node name -> its NodeSourceDebugInfo, read off the torchao loggers."""
    infos = {}
    for node in logged.graph.nodes:
        if node.op != "call_module":
            continue
        logger = logged.get_submodule(node.target)
        info = getattr(logger, "debug_info", None)
        if info is not None and node.args and isinstance(node.args[0], Node):
            infos[node.args[0].name] = info
    return infos


def _loggers_by_node(logged: GraphModule) -> dict[str, torch.nn.Module]:
    """Converted-graph node name -> the torchao logger recording its output."""
    return {n.args[0].name: logged.get_submodule(n.target) for n in logged.graph.nodes
            if n.op == "call_module" and n.args and isinstance(n.args[0], Node)
            and hasattr(logged.get_submodule(n.target), "stats")}


def _key(info, by_name: bool):
    return info.name if by_name else info


def _clear(logged: GraphModule) -> None:
    for module in logged.children():
        stats = getattr(module, "stats", None)
        if isinstance(stats, list):
            stats.clear()


def _tensor(value) -> torch.Tensor | None:
    return value if isinstance(value, torch.Tensor) and value.is_floating_point() else None


# -- the local evaluation -----------------------------------------------------------------
def _is_qdq_like(node: Node) -> bool:
    if node.op != "call_function":
        return False
    if node.target in QDQ_OPS:
        return True
    return (node.target is operator.getitem and isinstance(node.args[0], Node)
            and node.args[0].target in CHOOSE_QPARAMS_OPS)


class _LocalRun:
    """Evaluates the converted graph twice over in one pass.

    `sub` is the world where every node with a float counterpart carries the float value (what
    a layer gets when everything upstream is exact); `loc` is a node's own result computed from
    `sub` inputs, carried through its output quantize/dequantize. The local output of a layer is
    `loc` at its output node.
    """

    def __init__(self, gm: GraphModule, float_key: dict[str, object], fused: set[str]) -> None:
        self.gm = gm
        self.float_key = float_key  # converted node name -> key into the float values
        # Activations fused into a layer (linear + relu): part of that layer's own computation.
        self.fused = fused
        self.nodes = list(gm.graph.nodes)
        last_use: dict[Node, int] = {}
        for i, n in enumerate(self.nodes):
            for a in n.all_input_nodes:
                last_use[a] = i
        self.free_after: dict[int, list[Node]] = {}
        for n, i in last_use.items():
            self.free_after.setdefault(i, []).append(n)

    def run(self, args: tuple, float_values: dict, wanted: set[str]) -> dict[str, torch.Tensor]:
        sub: dict[Node, object] = {}
        loc: dict[Node, object] = {}
        out: dict[str, torch.Tensor] = {}
        inputs = iter(args)
        for i, n in enumerate(self.nodes):
            if n.op == "placeholder":
                sub[n] = loc[n] = next(inputs)
            elif n.op == "get_attr":
                sub[n] = loc[n] = operator.attrgetter(n.target)(self.gm)
            elif n.op == "output":
                break
            elif _is_qdq_like(n):
                sub[n] = self._call(n, sub)
                loc[n] = sub[n] if all(loc[a] is sub[a] for a in n.all_input_nodes) else self._call(n, loc)
            else:
                computed = self._call(n, sub)
                loc[n] = self._call(n, loc) if n.name in self.fused else computed
                ref = float_values.get(self.float_key.get(n.name))
                ok = (isinstance(ref, torch.Tensor) and isinstance(computed, torch.Tensor)
                      and ref.shape == computed.shape and ref.dtype == computed.dtype)
                sub[n] = ref if ok else computed
            if n.name in wanted and isinstance(loc[n], torch.Tensor):
                out[n.name] = loc[n]
            for dead in self.free_after.get(i, ()):
                sub.pop(dead, None)
                loc.pop(dead, None)
        return out

    def _call(self, n: Node, env: dict):
        args = torch.fx.node.map_arg(n.args, lambda a: env[a])
        kwargs = torch.fx.node.map_arg(n.kwargs, lambda a: env[a])
        if n.op == "call_module":
            return self.gm.get_submodule(n.target)(*args, **kwargs)
        if n.op == "call_method":
            self_obj, *rest = args
            return getattr(self_obj, n.target)(*rest, **kwargs)
        return n.target(*args, **kwargs)


# -- the debugger -----------------------------------------------------------------------
def _float_graph(model: torch.nn.Module, first: tuple) -> GraphModule:
    if isinstance(model, GraphModule):
        return model
    return export_model(model.eval(), first).module()


def layer_errors(
    model: torch.nn.Module,
    quantized: GraphModule,
    inputs: Iterable,
) -> LayerErrorReport:
    """Per-layer SQNR and max error of a converted model against its float model.

    Args:
        model: the float model: the GraphModule `quantized` was prepared from (exact matching), or
            the float `nn.Module` (re-exported here; matched by source-node name).
        quantized: the converted GraphModule (`pt2e_int8.quantize` / `convert`).
        inputs: batches (a tensor or a tuple of tensors each), as for calibration.

    Returns:
        A LayerErrorReport with one row per coverage row of `quantized`.

    Example:
        report = layer_errors(model, qm, [(x[:64],)])
        print(report)                 # table; report.worst(3) names the layers that hurt most
    """
    batches = [as_input_tuple(b) for b in inputs]
    if not batches:
        raise UserInputError("layer_errors needs at least one input batch: pass inputs=[batch, ...].")
    float_gm = _float_graph(model, batches[0])
    float_logged = prepare_for_propagation_comparison(float_gm)
    quant_logged = prepare_for_propagation_comparison(quantized)
    q_infos = _logger_infos(quant_logged)
    f_infos = _logger_infos(float_logged)
    by_name = not ({i.graph_id for i in q_infos.values()} & {i.graph_id for i in f_infos.values()})
    float_names = {_key(i, by_name): name for name, i in f_infos.items()}
    float_key = {name: _key(i, by_name) for name, i in q_infos.items()}

    rows = coverage(quantized).layers
    nodes = {n.name: n for n in quantized.graph.nodes}
    f_nodes = {n.name: n for n in float_gm.graph.nodes}
    anchors = {}
    mismatched = []
    for row in rows:
        node = nodes.get(row.node)
        key = float_key.get(layer_anchor(node).name) if node is not None else None
        if key is None or key not in float_names:
            continue
        f_node = f_nodes[float_names[key]]
        if layer_anchor(node).target != f_node.target:
            mismatched.append(f"{row.name}: {layer_anchor(node).target} vs {f_node.target}")
            continue
        anchors[row.name] = key
    if mismatched or (rows and not anchors):
        raise ModelMismatchError(
            "The quantized model does not come from this float model: "
            + ("; ".join(mismatched[:5]) if mismatched else "none of its layers has a float counterpart")
            + ". Pass the float model (or the float GraphModule) that was quantized into it.")

    # Each row is read at its output node (the dequantize after a static output quantize):
    # the quantized side from that node's own logger, the float side from the anchor's handle.
    outputs = {name: layer_output(nodes[r.node]).name for r in rows if (name := r.name) in anchors}
    q_loggers = _loggers_by_node(quant_logged)
    fused = {layer_anchor(nodes[r.node]).name for r in rows
             if r.node in nodes and layer_anchor(nodes[r.node]) is not nodes[r.node]}
    local = _LocalRun(quantized, float_key, fused)
    acc = {name: RunningError() for name in anchors}
    loc = {name: RunningError() for name in anchors}
    with torch.no_grad():
        for batch in batches:
            float_logged(*batch)
            quant_logged(*batch)
            f_res = {_key(i, by_name): v for i, v in extract_results_from_loggers(float_logged).items()}
            float_values = {k: _tensor(v[2][-1]) for k, v in f_res.items()}
            local_values = local.run(batch, float_values, set(outputs.values()))
            for name, key in anchors.items():
                ref = float_values.get(key)
                logger = q_loggers.get(outputs[name])
                got = _tensor(logger.stats[-1]) if logger is not None and logger.stats else None
                if ref is None or got is None or ref.shape != got.shape:
                    continue
                acc[name].add(ref, got)
                mine = local_values.get(outputs[name])
                if mine is not None and mine.shape == ref.shape:
                    loc[name].add(ref, mine)
            _clear(float_logged)
            _clear(quant_logged)

    out = []
    for row in rows:
        node = nodes.get(row.node)
        a, lo = acc.get(row.name), loc.get(row.name)
        out.append(LayerError(
            name=row.name, op=row.op, node=row.node, scheme=row.scheme if row.quantized else None,
            step=output_step(node) if node is not None else None,
            acc_sqnr=a.sqnr if a else None, acc_max_error=a.max_abs if a and a.seen else None,
            local_sqnr=lo.sqnr if lo else None, local_max_error=lo.max_abs if lo and lo.seen else None))
    notes = ["matched by source-node name (the float model was re-exported)"] if by_name else []
    return LayerErrorReport(out, len(batches), notes)
