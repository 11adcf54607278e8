"""Conv family: conv1d / conv2d (incl. padding="same") (+ batch-norm under QAT) (+ relu/hardtanh).

For PTQ, prepare_pt2e has already folded eval-mode batch-norm into the conv. For QAT
the conv → batch_norm pair is annotated as one pattern so torchao's `prepare_qat_pt2e`
can fuse it (fake-quantized folded weights) and `convert_pt2e` folds it for good.
Dynamic int8 convs are 2-D and not depthwise: the only ones XNNPACK has a qd8 kernel for
(ONNX Runtime runs no dynamic conv in int8 at all), so other convs stay float and say why.
"""

from __future__ import annotations

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

CONV_TARGETS = (
    aten.conv1d.default, aten.conv2d.default, aten.conv1d.padding, aten.conv2d.padding,
    aten.convolution.default,
)
BATCH_NORM_TARGETS = frozenset({aten.batch_norm.default})


def _batch_norm_user(node: Node) -> Node | None:
    if len(node.users) != 1:
        return None
    (user,) = node.users
    if user.op == "call_function" and user.target in BATCH_NORM_TARGETS and user.args[0] is node:
        return user
    return None


def check_conv_operands(node: Node) -> Rejected | None:
    """The checks every conv-like layer shares: a constant weight and a float input."""
    act, weight, _ = layer_operands(node)
    if not is_param(weight):
        return Rejected("conv weight is not a constant parameter")
    if not is_float_tensor(act):
        return Rejected("input is not a floating-point tensor")
    return None


def conv_annotation(node: Node, cfg: QuantConfig, *, axis: int = 0, weight_cfg: QuantConfig | None = None
                    ) -> Annotation:
    """act → int8, weight → int8 along `axis` (`weight_cfg`'s granularity, default `cfg`'s),
    bias → int32 or float, output (after bn / relu) → int8."""
    act, weight, bias = layer_operands(node)
    weight_cfg = weight_cfg or cfg
    # Order matters: torchao's QAT conv-bn fusion re-keys this map by position (act, weight, bias).
    inputs = {act: activation_spec(cfg)} if cfg.quantizes_activations else {}
    inputs[weight] = weight_spec(weight_cfg, axis)
    nodes = [node, weight]
    batch_norm = _batch_norm_user(node) if cfg.is_qat else None
    if isinstance(bias, Node):
        # Under QAT the conv-bn fusion rewrites the bias; the folded bias stays float.
        inputs[bias] = None if batch_norm is not None else bias_spec(weight_cfg, (act, node), (weight, node))
        nodes.append(bias)

    annotations = {node: QuantizationAnnotation(input_qspec_map=inputs)}
    if cfg.mode == "static":
        tail = batch_norm or node
        if batch_norm is not None:
            nodes.append(batch_norm)
        output_node = fused_activation(node) if batch_norm is None else _fused_after_bn(batch_norm)
        output_node = output_node or tail
        nodes.append(output_node)
        spec = activation_spec(cfg)
        if output_node is node:
            annotations[node].output_qspec = spec
        else:
            annotations[output_node] = QuantizationAnnotation(output_qspec=spec)
    return Annotation(annotations, tuple(dict.fromkeys(nodes)))


def _fused_after_bn(batch_norm: Node) -> Node | None:
    """relu / hardtanh after a QAT conv → batch-norm: folded with it at convert."""
    if len(batch_norm.users) != 1:
        return None
    (user,) = batch_norm.users
    fusable = (aten.relu.default, aten.relu_.default, aten.relu6.default, aten.hardtanh.default,
               aten.hardtanh_.default)
    return user if user.op == "call_function" and user.target in fusable and user.args[0] is batch_norm else None


def _dynamic_rejection(node: Node) -> Rejected | None:
    weight = node.args[1].meta["val"]
    groups = node.args[-1] if node.target == aten.convolution.default else (node.args[6] if len(node.args) > 6 else 1)
    if weight.dim() != 4:
        return Rejected(f"dynamic int8 covers 2-D convs only (XNNPACK has no qd8 {weight.dim() - 2}-D conv); "
                        "a static config quantizes this one")
    if groups > 1 and weight.shape[1] == 1:
        return Rejected("dynamic int8 does not cover depthwise convs (no XNNPACK qd8 kernel); "
                        "a static config quantizes this one")
    return None


@op_annotator(name="conv", targets=CONV_TARGETS, priority=50)
def annotate_conv(node: Node, cfg: QuantConfig) -> Annotation | Rejected:
    if node.target == aten.convolution.default and node.args[6]:
        return Rejected("a transposed aten.convolution (a decomposed graph) is not annotated; quantize the "
                        "graph torch.export gives, where it is conv_transpose1d/2d")
    rejected = check_conv_operands(node) or (_dynamic_rejection(node) if cfg.mode == "dynamic" else None)
    if rejected:
        return rejected
    return conv_annotation(node, cfg)
