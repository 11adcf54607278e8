"""Linear family: aten.linear, addmm and mm with a constant weight, plus a fused clamp-like activation.

static:      act → int8, weight → int8 (per-channel), bias → int32, output (after relu/clamp) → int8
dynamic:     act → int8 with run-time qparams, weight → int8, float bias and output
weight-only: weight → int8 only
No size threshold: a Linear(1, 1) is annotated like any other.
"""

import torch
from torch.fx import Node
from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

from pt2e_int8.annotators._base import (
    Annotation,
    Rejected,
    fused_activation,
    is_float_tensor,
    is_param,
    op_annotator,
)
from pt2e_int8.config import QuantConfig, activation_spec, bias_spec, weight_spec

aten = torch.ops.aten

# target -> (activation arg, weight arg, bias arg or None, output-channel axis of the weight)
GEMM_ARGS = {
    aten.linear.default: (0, 1, 2, 0),
    aten.addmm.default: (1, 2, 0, 1),
    aten.mm.default: (0, 1, None, 1),
}


@op_annotator(name="linear", targets=GEMM_ARGS, priority=50)
def annotate_linear(node: Node, cfg: QuantConfig) -> Annotation | Rejected:
    act_i, weight_i, bias_i, axis = GEMM_ARGS[node.target]
    act, weight = node.args[act_i], node.args[weight_i]
    bias = node.args[bias_i] if bias_i is not None and len(node.args) > bias_i else None
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
