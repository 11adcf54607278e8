"""Matmul family: matmul / bmm / mm between two activations (attention scores and context).

Both operands are activations, so only static int8 applies: dynamic and weight-only
configs leave these in float, and say so. A matmul against a constant 2-D weight is a
linear layer in disguise and is annotated as one (weight channel axis = last dim).
"""

import torch
from torch.fx import Node
from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

from pt2e_int8.annotators.framework import (
    Annotation,
    Rejected,
    is_float_tensor,
    is_param,
    op_annotator,
)
from pt2e_int8.config import QuantConfig, activation_spec, weight_spec

aten = torch.ops.aten

MATMUL_TARGETS = (aten.matmul.default, aten.bmm.default, aten.mm.default)


@op_annotator(name="matmul", targets=MATMUL_TARGETS, priority=40)
def annotate_matmul(node: Node, cfg: QuantConfig) -> Annotation | Rejected:
    a, b = node.args[0], node.args[1]
    if not (is_float_tensor(a) and is_float_tensor(b)):
        return Rejected("an operand is not a floating-point tensor")
    if is_param(b) and b.meta["val"].dim() == 2:
        inputs = {b: weight_spec(cfg, 1)}
        if cfg.quantizes_activations:
            inputs[a] = activation_spec(cfg)
        out = activation_spec(cfg) if cfg.mode == "static" else None
        return Annotation({node: QuantizationAnnotation(input_qspec_map=inputs, output_qspec=out)}, (node, b))
    if cfg.mode != "static":
        return Rejected(
            f"activation × activation matmul needs static int8; the {cfg.mode.replace('_', '-')} "
            "config quantizes weights only"
        )
    spec = activation_spec(cfg)
    ann = QuantizationAnnotation(input_qspec_map={a: spec, b: spec}, output_qspec=spec)
    return Annotation({node: ann}, (node,))
