"""Elementwise family: add / mul of two float tensors (+ relu/clamp), static int8 only.

A scalar operand (x * 0.5, x + 1) or an integer tensor leaves the op in float, exactly
as exported: we never turn integer scalars into float tensors (the stock quantizer
does, and breaks Hugging Face attention-mask arithmetic).
"""

import torch
from torch.fx import Node
from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

from pt2e_int8.annotators._base import (
    Annotation,
    Rejected,
    fused_activation,
    is_float_tensor,
    op_annotator,
)
from pt2e_int8.config import QuantConfig, activation_spec

aten = torch.ops.aten

ELEMENTWISE_TARGETS = (aten.add.Tensor, aten.mul.Tensor)


@op_annotator(name="elementwise", targets=ELEMENTWISE_TARGETS, priority=30)
def annotate_elementwise(node: Node, cfg: QuantConfig) -> Annotation | Rejected:
    if cfg.mode != "static":
        return Rejected("add/mul is quantized by static configs only")
    a, b = node.args[0], node.args[1]
    if not (is_float_tensor(a) and is_float_tensor(b)):
        return Rejected("an operand is a scalar or not a floating-point tensor")
    if a.meta["val"].shape != node.meta["val"].shape and b.meta["val"].shape != node.meta["val"].shape:
        return Rejected("both operands broadcast")
    spec = activation_spec(cfg)
    output_node = fused_activation(node) or node
    annotations = {node: QuantizationAnnotation(input_qspec_map={a: spec, b: spec})}
    if output_node is node:
        annotations[node].output_qspec = spec
    else:
        annotations[output_node] = QuantizationAnnotation(output_qspec=spec)
    return Annotation(annotations, tuple(dict.fromkeys((node, output_node))))
