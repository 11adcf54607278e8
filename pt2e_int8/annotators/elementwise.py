"""Elementwise family: add / sub / mul of two float tensors (+ relu fused into add), static int8 only.

XNNPACK runs all three in qs8 with their own output qparams, and fuses a relu into add
only (ops.FUSED_ACTIVATIONS); a hardtanh or clamp after them is a standalone int8 op
that shares the result's qparams (shared_qparams.py).

A scalar operand (x * 0.5, x + 1), an integer tensor, or a float tensor computed only
from integer/boolean inputs (an additive attention mask) leaves the op in float, exactly
as exported: we never turn integer scalars into float tensors (the stock quantizer
does, and breaks Hugging Face attention-mask arithmetic).
"""

from torch.fx import Node
from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

from pt2e_int8.annotators.framework import (
    Annotation,
    Rejected,
    carries_data,
    feeds_int8,
    fused_activation,
    is_float_tensor,
    op_annotator,
)
from pt2e_int8.config import QuantConfig, activation_spec
from pt2e_int8.ops import ELEMENTWISE_OPS, int8_limit


@op_annotator(name="elementwise", targets=ELEMENTWISE_OPS, priority=30)
def annotate_elementwise(node: Node, cfg: QuantConfig) -> Annotation | Rejected:
    if cfg.mode != "static":
        return Rejected("add/sub/mul is quantized by static configs only")
    a, b = node.args[0], node.args[1]
    if not (is_float_tensor(a) and is_float_tensor(b)):
        return Rejected("an operand is a scalar or not a floating-point tensor")
    if not (carries_data(a) and carries_data(b)):
        return Rejected("an operand is mask arithmetic (derived from integer/boolean inputs only)")
    limit = int8_limit(node)
    if limit:
        return Rejected(limit)
    output_node = fused_activation(node) or node
    if not feeds_int8(output_node):
        users = ", ".join(sorted({str(getattr(u.target, "__name__", u.target)) for u in output_node.users}))
        return Rejected(f"its result only feeds float ops ({users}): int8 here would add error only")
    if a.meta["val"].shape != node.meta["val"].shape and b.meta["val"].shape != node.meta["val"].shape:
        return Rejected("both operands broadcast")
    spec = activation_spec(cfg)
    annotations = {node: QuantizationAnnotation(input_qspec_map={a: spec, b: spec})}
    if output_node is node:
        annotations[node].output_qspec = spec
    else:
        annotations[output_node] = QuantizationAnnotation(output_qspec=spec)
    return Annotation(annotations, tuple(dict.fromkeys((node, output_node))))
