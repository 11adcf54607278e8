"""Coverage: which linear / conv / matmul layer of a converted graph runs in int8, and why not.

Read from the converted graph itself (is the weight an int8 constant behind a dequantize?
is the activation dequantized?), joined with the reasons the annotators recorded, so the
report cannot claim a layer is quantized when the graph says otherwise.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
from torch.fx import GraphModule, Node

from pt2e_int8.annotators._base import recorded
from pt2e_int8.qdq import PER_CHANNEL_OPS, is_dequantize, is_dynamic_dequantize
from pt2e_int8.quantizer import module_stack

aten = torch.ops.aten

# layer op -> (family, activation arg, weight arg or None for activation × activation)
LAYER_OPS = {
    aten.linear.default: ("linear", 0, 1),
    aten.addmm.default: ("linear", 1, 2),
    aten.conv1d.default: ("conv", 0, 1),
    aten.conv2d.default: ("conv", 0, 1),
    aten.convolution.default: ("conv", 0, 1),
    aten.mm.default: ("matmul", 0, 1),
    aten.matmul.default: ("matmul", 0, 1),
    aten.bmm.default: ("matmul", 0, 1),
    aten.scaled_dot_product_attention.default: ("attention", 0, None),
}

_SDPA_REASON = (
    "scaled_dot_product_attention is not quantized: load the model with "
    "attn_implementation='eager' so attention is matmul + softmax"
)
_UNOBSERVED_REASON = "no calibration data reached it: its activation qparams are placeholders"


@dataclass(frozen=True)
class LayerRow:
    name: str  # module path, e.g. encoder.layer.0.attention.self.query
    op: str  # linear / conv / matmul / attention
    node: str  # graph node name
    quantized: bool
    scheme: str | None  # e.g. static/per-channel
    reason: str | None  # why not quantized


def _dequantized(arg) -> Node | None:
    return arg if isinstance(arg, Node) and is_dequantize(arg) else None


def _graph_scheme(node: Node, act_i: int, weight_i: int | None) -> str | None:
    """The scheme the converted graph really has at this layer, or None if it is float."""
    act = _dequantized(node.args[act_i])
    other = _dequantized(node.args[weight_i]) if weight_i is not None and len(node.args) > weight_i else None
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
            "layers": [asdict(r) for r in self.layers],
            "summary": {"layers": len(self.layers), "quantized": len(self.quantized)},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        header = ("layer", "op", "int8", "scheme / reason")
        rows = [(r.name, r.op, "yes" if r.quantized else "no", r.scheme if r.quantized else r.reason or "")
                for r in self.layers]
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
        widths[-1] = 0
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                 for row in [header, *rows]]
        lines.append(f"{len(self.quantized)}/{len(self.layers)} layers in int8")
        return "\n".join(lines)


def coverage(gm: GraphModule) -> CoverageReport:
    """Per-layer coverage of a converted GraphModule (from `quantize` or `convert`).

    Example:
        print(coverage(qm))              # table
        coverage(qm).to_dict()["layers"]  # rows for report.json
    """
    nodes = [n for n in gm.graph.nodes if n.op == "call_function" and n.target in LAYER_OPS]
    paths = [module_stack(n)[-1][0] if module_stack(n) else "" for n in nodes]
    rows = []
    for node, path in zip(nodes, paths, strict=True):
        family, act_i, weight_i = LAYER_OPS[node.target]
        name = path or node.name
        if paths.count(path) > 1 or not path:
            name = f"{path}[{node.name}]" if path else node.name
        info = recorded(node)
        scheme = _graph_scheme(node, act_i, weight_i)
        reason = None
        if info.get("unobserved"):
            scheme, reason = None, _UNOBSERVED_REASON
        elif scheme is None:
            if family == "attention":
                reason = _SDPA_REASON
            else:
                reason = info.get("reason") or "no annotator matched this pattern"
        elif info.get("scheme") and "+qat" in info["scheme"]:
            mode, gran = scheme.split("/")
            scheme = f"{mode}+qat/{gran}"
        rows.append(LayerRow(name=name, op=family, node=node.name, quantized=scheme is not None,
                             scheme=scheme, reason=reason))
    return CoverageReport(rows)
