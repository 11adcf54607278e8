"""Ops that keep their input's qparams: data movement, pooling and concatenation.

These run last: they only join a quantized region (their input's producer already has
an output qspec), so they never create a q/dq island of their own. Output and input
share one observer, so the int8 values pass through unchanged.
"""

from torch.fx import Node
from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

from pt2e_int8.annotators.framework import (
    Annotation,
    Rejected,
    is_float_tensor,
    op_annotator,
    output_is_quantized,
)
from pt2e_int8.config import QuantConfig
from pt2e_int8.ops import CAT_OPS, SHARED_QPARAM_OPS


@op_annotator(name="shared_qparams", targets=SHARED_QPARAM_OPS, priority=10)
def annotate_shared_qparams(node: Node, cfg: QuantConfig) -> Annotation | Rejected:
    if cfg.mode != "static":
        return Rejected("shares qparams only within static int8 regions")
    src = node.args[0]
    if not is_float_tensor(src):
        return Rejected("input is not a floating-point tensor")
    if not output_is_quantized(src):
        return Rejected("input is not quantized")
    ann = QuantizationAnnotation(
        input_qspec_map={src: SharedQuantizationSpec(src)},
        output_qspec=SharedQuantizationSpec((src, node)),
    )
    return Annotation({node: ann}, (node,))


@op_annotator(name="cat", targets=CAT_OPS, priority=10)
def annotate_cat(node: Node, cfg: QuantConfig) -> Annotation | Rejected:
    if cfg.mode != "static":
        return Rejected("shares qparams only within static int8 regions")
    inputs = list(node.args[0])
    if not all(is_float_tensor(i) for i in inputs):
        return Rejected("an input is not a floating-point tensor")
    if not all(output_is_quantized(i) for i in inputs):
        return Rejected("not every input is quantized")
    first = inputs[0]
    shared = SharedQuantizationSpec((first, node))
    qspecs = {first: SharedQuantizationSpec(first)}
    qspecs.update({i: shared for i in inputs[1:] if i is not first})  # cat([h, h]) shares h once
    ann = QuantizationAnnotation(input_qspec_map=qspecs, output_qspec=shared)
    return Annotation({node: ann}, (node,))
