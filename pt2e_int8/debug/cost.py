"""The latency cost of moving a layer off static int8, from where it really runs.

A layer's time is taken as proportional to its multiply-accumulates, at one rate for int8
kernels and another for float ones. Where the layer runs comes from the artifact's placement
(`ExportResult.placement`: "int8" kernel or "float"): on XNNPACK a static attention matmul
already runs dequantize → f32 bmm → quantize, so keeping it float costs nothing, while a
linear that leaves its qs8 kernel pays the float rate. Costs are fractions of the model's
estimated latency, so +0.05 reads "about 5 % slower".

The two rates are measured, not guessed (this project's bench, AMD EPYC Zen 5, 2 threads):
all-MiniLM-L6-v2 .pte float 7.74 ms vs int8 dynamic 4.20 ms vs int8 static 4.32 ms, so a float
GEMM takes ~1.8x its int8 kernel and XNNPACK's dynamic (qd8) kernel costs no more than static.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch.fx import Node
from torch.fx.experimental.symbolic_shapes import is_concrete_int

from pt2e_int8.ops import layer_op, layer_operands

# Float kernel time over int8 kernel time for the same layer (MiniLM .pte: 7.74 / 4.20 ms).
FLOAT_OVER_INT8 = 1.8
# Dynamic int8 over static int8: the run-time quantization of the input row (4.20 vs 4.32 ms
# measured, i.e. no slower; a small positive rate keeps static preferred when all else is equal).
DYNAMIC_OVER_STATIC = 1.02
CHOICES = ("static", "dynamic", "float")


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d) if is_concrete_int(d) else 1  # a symbolic (batch) dimension counts as 1
    return n


def layer_macs(node: Node) -> int:
    """Multiply-accumulates of one layer node per sample (0 when the shapes are unknown)."""
    spec = layer_op(node)
    out = node.meta.get("val")
    if spec is None or not hasattr(out, "shape"):
        return 0
    act, weight, _ = layer_operands(node)
    if spec.family in ("linear", "matmul"):  # reduce over the activation's last dimension
        val = act.meta.get("val") if act is not None else None
        return _numel(out.shape) * _numel(val.shape[-1:]) if hasattr(val, "shape") else 0
    if spec.family in ("conv", "conv_transpose") and weight is not None and "val" in weight.meta:
        w = weight.meta["val"].shape
        per_output = _numel(w[1:]) if spec.family == "conv" else _numel([w[0], *w[2:]])
        return _numel(out.shape) * per_output
    return 0


def _rate(choice: str, int8_kernel: bool) -> float:
    if choice == "float" or not int8_kernel:
        return FLOAT_OVER_INT8
    return DYNAMIC_OVER_STATIC if choice == "dynamic" else 1.0


def choice_cost(
    nodes: Sequence[Node],
    choice: str,
    *,
    rows: Mapping[str, str],
    placement: Mapping[str, str] | None,
    dynamic_kernel: bool,
    total: float,
) -> float:
    """Estimated latency added by running a unit's layers as `choice` instead of static int8.

    Args:
        nodes: the unit's layer nodes.
        choice: "dynamic" or "float".
        rows: layer node name -> coverage row name (placement is keyed by row).
        placement: row name -> "int8" / "float" where the static model runs it (None: int8).
        dynamic_kernel: whether a dynamic int8 kernel exists for these layers (not for act x act).
        total: the static model's estimated cost (the normaliser).
    """
    extra = 0.0
    for node in nodes:
        macs = layer_macs(node)
        static_int8 = placement is None or placement.get(rows.get(node.name, ""), "int8") == "int8"
        now = _rate("static", static_int8)
        then = _rate(choice, choice == "dynamic" and dynamic_kernel)
        extra += macs * (then - now)
    return extra / total if total else 0.0


def model_cost(nodes: Sequence[Node], *, rows: Mapping[str, str], placement: Mapping[str, str] | None) -> float:
    """The static model's estimated cost: every layer's MACs at its kernel's rate."""
    cost = 0.0
    for node in nodes:
        int8 = placement is None or placement.get(rows.get(node.name, ""), "int8") == "int8"
        cost += layer_macs(node) * _rate("static", int8)
    return cost
