"""Coverage: which layer of a converted graph runs in int8, and why not.

Rows are the layer ops of `pt2e_int8.ops.LAYER_OPS` found in the graph, plus one row for
any parametric module (`ops.PARAMETRIC_MODULES`) that no layer op accounts for, so a row
never goes missing. Whether a row is quantized is read from the converted graph itself (is
the weight an int8 constant behind a dequantize? is the activation dequantized?), joined
with the `Decision` the annotators recorded, so the report cannot claim a layer is
quantized when the graph says otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch.fx import GraphModule, Node

from pt2e_int8.decision import decision_of
from pt2e_int8.model_state import require_graph
from pt2e_int8.ops import PARAMETRIC_MODULES, layer_op, layer_operands
from pt2e_int8.qdq import PER_CHANNEL_OPS, is_dequantize, is_dynamic_dequantize
from pt2e_int8.quantizer import module_stack
from pt2e_int8.text_table import text_table

aten = torch.ops.aten

_UNOBSERVED_REASON = "no calibration data reached it: its activation qparams are placeholders"


def _is_hugging_face(node: Node) -> bool:
    return any(tname.startswith("transformers.") for _, tname in module_stack(node))


def _attention_reason(node: Node) -> str:
    if _is_hugging_face(node):
        return ("scaled_dot_product_attention is not quantized: load the model with "
                "attn_implementation='eager' so attention is matmul + softmax, which static int8 quantizes")
    return ("the attention core (softmax(q·kᵀ)·v, one scaled_dot_product_attention op) runs in float; its "
            "input and output projections are separate linear rows. To quantize the two matmuls, write "
            "attention as matmul + softmax (need_weights=True in nn.MultiheadAttention) under a static config")


# family -> why a row of that family is float when no annotator said otherwise
_DEFAULT_REASONS: dict[str, Callable[[Node], str]] = {
    "attention": _attention_reason,
    "recurrent": lambda node: (
        f"{node.target.__name__.split('.')[0]} is one fused recurrent op that no int8 kernel runs; "
        "it stays float"),
    "embedding": lambda node: (
        "embeddings are quantized weight-only: set_module_type(nn.Embedding, QuantConfig.weight_only())"),
}
_NO_MATCH = "no annotator matched this pattern"


@dataclass(frozen=True)
class LayerRow:
    name: str  # module path, e.g. encoder.layer.0.attention.self.query
    op: str  # family: linear / conv / conv_transpose / matmul / attention / recurrent / embedding
    node: str  # graph node name ("" for a module with no layer op in the graph)
    quantized: bool
    scheme: str | None  # e.g. static/per-channel
    reason: str | None  # why not quantized
    notes: tuple[str, ...] = ()  # rewrites before annotation (smoothing, decomposition)


def _dequantized(arg) -> Node | None:
    return arg if isinstance(arg, Node) and is_dequantize(arg) else None


def _graph_scheme(node: Node) -> str | None:
    """The scheme the converted graph really has at this layer, or None if it is float."""
    operands = layer_operands(node)
    act, other = _dequantized(operands.act), _dequantized(operands.weight)
    if other is not None and other.args[0].op == "get_attr":  # int8 weight constant
        granularity = "per-channel" if other.target in PER_CHANNEL_OPS else "per-tensor"
        if act is None:
            return f"weight-only/{granularity}"
        return f"{'dynamic' if is_dynamic_dequantize(act) else 'static'}/{granularity}"
    if act is not None and other is not None:  # activation × activation
        return "static/per-tensor"
    return None


@dataclass
class CoverageReport:
    layers: list[LayerRow]

    @property
    def quantized(self) -> list[LayerRow]:
        return [r for r in self.layers if r.quantized]

    @property
    def float_layers(self) -> list[LayerRow]:
        return [r for r in self.layers if not r.quantized]

    def to_dict(self) -> dict:
        return {
            "layers": [{**asdict(r), "notes": list(r.notes)} for r in self.layers],
            "summary": {"layers": len(self.layers), "quantized": len(self.quantized)},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        header = ("layer", "op", "int8", "scheme / reason")
        rows = [(r.name, r.op, "yes" if r.quantized else "no", r.scheme if r.quantized else r.reason or "")
                for r in self.layers]
        return f"{text_table(header, rows)}\n{len(self.quantized)}/{len(self.layers)} layers in int8"


def _layer_row(node: Node, name: str) -> LayerRow:
    family = layer_op(node).family
    decision = decision_of(node)
    scheme = _graph_scheme(node)
    reason = None
    if decision is not None and decision.unobserved:
        scheme, reason = None, _UNOBSERVED_REASON
    elif scheme is None:
        reason = decision.reason if decision is not None and decision.reason else None
        if reason is None:
            reason = _DEFAULT_REASONS.get(family, lambda n: _NO_MATCH)(node)
    elif decision is not None and decision.scheme and "+qat" in decision.scheme:
        mode, gran = scheme.split("/")
        scheme = f"{mode}+qat/{gran}"
    notes = decision.notes if decision is not None else ()
    return LayerRow(name=name, op=family, node=node.name, quantized=scheme is not None,
                    scheme=scheme, reason=reason, notes=notes)


def _unaccounted_modules(gm: GraphModule, layer_nodes: list[Node]) -> list[tuple[str, str]]:
    """Parametric modules (path, family) that own no layer node: listed so none goes missing."""
    covered = {path for n in layer_nodes for path, _ in module_stack(n)}
    found: dict[str, str] = {}
    for node in gm.graph.nodes:
        for path, tname in module_stack(node):
            family = PARAMETRIC_MODULES.get(tname)
            if family is not None and path not in covered:
                found.setdefault(path, family)
    return sorted(found.items())


def coverage(gm: GraphModule) -> CoverageReport:
    """Per-layer coverage of a converted GraphModule (from `quantize` or `convert`).

    Example:
        print(coverage(qm))              # table
        coverage(qm).to_dict()["layers"]  # rows for report.json
    """
    require_graph(gm, "coverage")
    nodes = [n for n in gm.graph.nodes if layer_op(n) is not None]
    paths = [module_stack(n)[-1][0] if module_stack(n) else "" for n in nodes]
    rows = []
    for node, path in zip(nodes, paths, strict=True):
        name = path or node.name
        if paths.count(path) > 1 or not path:
            name = f"{path}[{node.name}]" if path else node.name
        rows.append(_layer_row(node, name))
    for path, family in _unaccounted_modules(gm, nodes):
        rows.append(LayerRow(name=path, op=family, node="", quantized=False, scheme=None,
                             reason="none of its ops is a layer op pt2e-int8 knows, so it runs in float"))
    return CoverageReport(rows)
