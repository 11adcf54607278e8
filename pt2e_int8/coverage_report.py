"""Coverage: which layer of a converted graph runs in int8, and why not.

Rows are the layer ops of `pt2e_int8.ops.LAYER_OPS` found in the graph, plus one row for
any parametric module (`ops.PARAMETRIC_MODULES`) that no layer op accounts for, so a row
never goes missing. Whether a row is quantized is read from the converted graph itself (is
the weight an int8 constant behind a dequantize? is the activation dequantized?), joined
with the `Decision` the annotators recorded, so the report cannot claim a layer is
quantized when the graph says otherwise.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch.fx import GraphModule, Node

from pt2e_int8.decision import decision_of, param_name, pending_notes
from pt2e_int8.model_state import require_graph
from pt2e_int8.ops import PARAMETRIC_MODULES, layer_op, layer_operands
from pt2e_int8.qdq import PER_CHANNEL_OPS, is_dequantize, is_dynamic_dequantize
from pt2e_int8.quantizer import module_stack
from pt2e_int8.text_table import text_table
from pt2e_int8.transforms.decompose_recurrent import RECURRENT_OPS, unroll_blocker

aten = torch.ops.aten

_UNOBSERVED_REASON = "no calibration data reached it: its activation qparams are placeholders"


def _is_hugging_face(node: Node) -> bool:
    return any(tname.startswith("transformers.") for _, tname in module_stack(node))


def _attention_reason(node: Node) -> str:
    if _is_hugging_face(node):
        return ("scaled_dot_product_attention is not quantized: load the model with "
                "attn_implementation='eager' so attention is matmul + softmax, which static int8 quantizes")
    return ("the attention core (softmax(q·kᵀ)·v, one scaled_dot_product_attention op) stays float by design: "
            "XNNPACK has no int8 batch-matmul and ONNX Runtime no faster int8 kernel for it, so int8 would only "
            "add quantize steps. The attention's input and output projections are their own rows")


def _recurrent_reason(node: Node) -> str:
    cell = RECURRENT_OPS.get(node.target)
    name = cell.name if cell else node.target.__name__.split(".")[0]
    blocker = unroll_blocker(node) if cell else "packed sequences are not unrolled"
    if blocker:
        return f"{name} runs as one fused float op: {blocker}"
    return (f"{name} runs as one fused float op (no int8 kernel takes it): this quantizer skipped "
            "DecomposeRecurrentPass, which unrolls it into int8 linears; keep Int8Quantizer's default transforms")


# family -> why a row of that family is float when no annotator said otherwise
_DEFAULT_REASONS: dict[str, Callable[[Node], str]] = {
    "attention": _attention_reason,
    "recurrent": lambda node: _recurrent_reason(node),
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
    # Every graph node of this row: one, or each time step of an unrolled recurrent projection.
    nodes: tuple[str, ...] = ()


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
            "layers": [{**asdict(r), "notes": list(r.notes), "nodes": list(r.nodes)} for r in self.layers],
            "summary": {"layers": len(self.layers), "quantized": len(self.quantized)},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        header = ("layer", "op", "int8", "scheme / reason")
        rows = [(r.name, r.op, "yes" if r.quantized else "no",
                 (r.scheme if r.quantized else r.reason or "") + "".join(f" [{n}]" for n in r.notes))
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
    notes = decision.notes if decision is not None else pending_notes(node)
    return LayerRow(name=name, op=family, node=node.name, quantized=scheme is not None,
                    scheme=scheme, reason=reason, notes=notes, nodes=(node.name,))


def _merge(rows: list[LayerRow]) -> LayerRow:
    """One row for the nodes of one unrolled weight: quantized only if every step is."""
    floats = [r for r in rows if not r.quantized]
    first = floats[0] if floats else rows[0]
    return dataclasses.replace(first, node=rows[0].node, nodes=tuple(r.node for r in rows))


def _row_base(node: Node, path: str) -> str:
    """A row's name before de-duplication: the module path, or the weight's own name when the
    weight belongs below that module (MultiheadAttention's in_proj / out_proj, an LSTM's
    weight_ih_l0), so rows of one module still say which layer they are."""
    name = param_name(node)
    if name is None:
        weight = layer_operands(node).weight
        if weight is not None and weight.op == "get_attr" and not str(weight.target).startswith("_"):
            name = str(weight.target)  # a float graph keeps the parameter names
    owner = name.removesuffix(".weight").removesuffix("_weight") if name else None
    return owner if owner and owner.startswith(path + ".") else path


def _group_steps(nodes: list[Node], paths: list[str]) -> list[tuple[list[Node], str]]:
    """Nodes grouped into rows: the per-step linears a transform unrolled from one weight (same
    module, same notes) are one layer; every other node is a row of its own."""
    groups: dict[object, tuple[list[Node], str]] = {}
    for node, path in zip(nodes, paths, strict=True):
        decision = decision_of(node)
        notes = decision.notes if decision is not None else pending_notes(node)
        key = (path, notes) if notes else node
        groups.setdefault(key, ([], path))[0].append(node)
    return list(groups.values())


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
    groups = [(members, _row_base(members[0], path)) for members, path in _group_steps(nodes, paths)]
    bases = [base for _, base in groups]
    rows = []
    for members, base in groups:
        node = members[0]
        name = base or node.name
        if bases.count(base) > 1 or not base:
            name = f"{base}[{node.name}]" if base else node.name
        rows.append(_merge([_layer_row(n, name) for n in members]))
    for path, family in _unaccounted_modules(gm, nodes):
        rows.append(LayerRow(name=path, op=family, node="", quantized=False, scheme=None,
                             reason="none of its ops is a layer op pt2e-int8 knows, so it runs in float"))
    return CoverageReport(rows)
