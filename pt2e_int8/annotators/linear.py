"""Linear family: aten.linear, addmm and mm with a constant weight, plus a fused clamp-like activation.

static:      act → int8, weight → int8 (per-channel), bias → int32, output (after relu/clamp) → int8
dynamic:     act → int8 with run-time qparams, weight → int8, float bias and output
weight-only: weight → int8 only
No size threshold: a Linear(1, 1) is annotated like any other.
"""

import torch
from torch.fx import Node
from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

from pt2e_int8.annotators.framework import (
    Annotation,
    Rejected,
    fused_activation,
    is_float_tensor,
    is_param,
    op_annotator,
)
from pt2e_int8.config import QuantConfig, activation_spec, bias_spec, weight_spec
from pt2e_int8.ops import layer_operands, weight_axis

aten = torch.ops.aten

# mm is a linear when its second operand is a constant weight; otherwise the matmul family takes it.
GEMM_TARGETS = (aten.linear.default, aten.addmm.default, aten.mm.default)


@op_annotator(name="linear", targets=GEMM_TARGETS, priority=50)
def annotate_linear(node: Node, cfg: QuantConfig) -> Annotation | Rejected:
    act, weight, bias = layer_operands(node)
    axis = weight_axis(node)
    if not is_param(weight):
        return Rejected("weight is not a constant parameter (activation × activation: see matmul)")
    if not is_float_tensor(act) or not is_float_tensor(weight):
        return Rejected("input or weight is not a floating-point tensor")

    # Order matters: torchao's QAT conv-bn fusion re-keys this map by position (act, weight, bias).
    inputs = {act: activation_spec(cfg)} if cfg.quantizes_activations else {}
    inputs[weight] = weight_spec(cfg, axis)
    nodes = [node, weight]
    output_node, output_spec = node, None
    if isinstance(bias, Node):
        inputs[bias] = bias_spec(cfg, (act, node), (weight, node))
        nodes.append(bias)
    if cfg.mode == "static":
        output_node = fused_activation(node) or node
        output_spec = activation_spec(cfg)
        nodes.append(output_node)

    annotations = {node: QuantizationAnnotation(input_qspec_map=inputs)}
    if output_node is node:
        annotations[node].output_qspec = output_spec
    else:
        annotations[output_node] = QuantizationAnnotation(output_qspec=output_spec)
    return Annotation(annotations, tuple(dict.fromkeys(nodes)))
