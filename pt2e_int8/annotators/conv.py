"""Conv family: conv1d / conv2d (+ batch-norm under QAT) (+ relu/clamp).

For PTQ, prepare_pt2e has already folded eval-mode batch-norm into the conv. For QAT
the conv → batch_norm pair is annotated as one pattern so torchao's `prepare_qat_pt2e`
can fuse it (fake-quantized folded weights) and `convert_pt2e` folds it for good.
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
from pt2e_int8.ops import layer_operands

aten = torch.ops.aten

CONV_TARGETS = (aten.conv1d.default, aten.conv2d.default, aten.convolution.default)
BATCH_NORM_TARGETS = frozenset({aten.batch_norm.default})


def _batch_norm_user(node: Node) -> Node | None:
    if len(node.users) != 1:
        return None
    (user,) = node.users
    if user.op == "call_function" and user.target in BATCH_NORM_TARGETS and user.args[0] is node:
        return user
    return None


@op_annotator(name="conv", targets=CONV_TARGETS, priority=50)
def annotate_conv(node: Node, cfg: QuantConfig) -> Annotation | Rejected:
    act, weight, bias = layer_operands(node)
    if node.target == aten.convolution.default and node.args[6]:
        return Rejected("transposed convolution is not supported")
    if not is_param(weight):
        return Rejected("conv weight is not a constant parameter")
    if not is_float_tensor(act):
        return Rejected("input is not a floating-point tensor")

    # Order matters: torchao's QAT conv-bn fusion re-keys this map by position (act, weight, bias).
    inputs = {act: activation_spec(cfg)} if cfg.quantizes_activations else {}
    inputs[weight] = weight_spec(cfg, 0)
    nodes = [node, weight]
    batch_norm = _batch_norm_user(node) if cfg.is_qat else None
    if isinstance(bias, Node):
        # Under QAT the conv-bn fusion rewrites the bias; the folded bias stays float.
        inputs[bias] = None if batch_norm is not None else bias_spec(cfg, (act, node), (weight, node))
        nodes.append(bias)

    annotations = {node: QuantizationAnnotation(input_qspec_map=inputs)}
    if cfg.mode == "static":
        tail = batch_norm or node
        if batch_norm is not None:
            nodes.append(batch_norm)
        output_node = fused_activation(tail) or tail
        nodes.append(output_node)
        spec = activation_spec(cfg)
        if output_node is node:
            annotations[node].output_qspec = spec
        else:
            annotations[output_node] = QuantizationAnnotation(output_qspec=spec)
    return Annotation(annotations, tuple(dict.fromkeys(nodes)))
