"""Transposed conv family: conv_transpose1d / conv_transpose2d (+ relu/hardtanh) (+ batch-norm under QAT).

The weight is [in, out/groups, k...], so per-channel scales run along axis 1 (ops.LayerOp
weight_axis). XNNPACK's qs8 deconvolution takes per-channel weights only with groups == 1
("XNNPACK does not support per input channel quantization for transpose convolutions with
groups > 1"), so a grouped one gets one weight scale per tensor instead of falling to float.
Dynamic int8 covers the 2-D, non-depthwise ones, as for convs.
"""

from __future__ import annotations

import torch
from torch.fx import Node

from pt2e_int8.annotators.conv import check_conv_operands, conv_annotation
from pt2e_int8.annotators.framework import Annotation, Rejected, op_annotator
from pt2e_int8.config import QuantConfig
from pt2e_int8.ops import weight_axis

aten = torch.ops.aten

CONV_TRANSPOSE_TARGETS = (aten.conv_transpose1d.default, aten.conv_transpose2d.input)


def _groups(node: Node) -> int:
    # conv_transpose{1,2}d(input, weight, bias, stride, padding, output_padding, groups, dilation)
    return node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)


@op_annotator(name="conv_transpose", targets=CONV_TRANSPOSE_TARGETS, priority=50)
def annotate_conv_transpose(node: Node, cfg: QuantConfig) -> Annotation | Rejected:
    rejected = check_conv_operands(node)
    if rejected:
        return rejected
    weight = node.args[1].meta["val"]
    groups = _groups(node)
    if cfg.mode == "dynamic" and (weight.dim() != 4 or (groups > 1 and weight.shape[1] == 1)):
        return Rejected("dynamic int8 covers 2-D, non-depthwise transposed convs only (XNNPACK qd8); "
                        "a static config quantizes this one")
    weight_cfg = cfg if groups == 1 else cfg.replace(per_channel=False)
    return conv_annotation(node, cfg, axis=weight_axis(node), weight_cfg=weight_cfg)
