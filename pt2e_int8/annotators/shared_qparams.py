"""Ops that keep their input's qparams: data movement, pooling, clamp-like activations, cat.

These run last (lowest priority), so every layer and elementwise op has already claimed
its edges. A data-movement op joins a quantized region only: its input's producer already
has an output qspec, so it never creates a q/dq island of its own. Output and input share
one observer, so the int8 values pass through unchanged (XNNPACK's qs8 clamp, max-pool,
slice and concatenation require exactly that). A node the backend cannot run in int8
(ops.INT8_OPS limits: a 3-D mean, a ceil-mode average pool) is left float with the reason.
"""

from torch.fx import Node
from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

from pt2e_int8.annotators.framework import (
    Annotation,
    Rejected,
    feeds_int8,
    is_float_tensor,
    op_annotator,
    output_is_quantized,
)
from pt2e_int8.config import QuantConfig, activation_spec
from pt2e_int8.ops import CAT_OPS, REDUCING_OPS, SHARED_QPARAM_OPS, int8_limit


@op_annotator(name="shared_qparams", targets=SHARED_QPARAM_OPS | CAT_OPS, priority=10)
def annotate_shared_qparams(node: Node, cfg: QuantConfig) -> Annotation | Rejected:
    """One annotator for both, so a single walk in graph order lets qparams flow through a
    chain like cat → permute → upsample."""
    if cfg.mode != "static":
        return Rejected("shares qparams only within static int8 regions")
    return annotate_cat(node, cfg) if node.target in CAT_OPS else _annotate_shared(node, cfg)


def _annotate_shared(node: Node, cfg: QuantConfig) -> Annotation | Rejected:
    src = node.args[0]
    if not is_float_tensor(src):
        return Rejected("input is not a floating-point tensor")
    quantized = output_is_quantized(src)
    if not quantized and not (node.target in REDUCING_OPS and feeds_int8(node)):
        return Rejected("input is not quantized")
    limit = int8_limit(node)
    if limit:
        return Rejected(limit)
    # A pooling / mean after a float op (a squeeze-excite block's mean after hardswish) that feeds an
    # int8 layer: its input gets an observer, as the stock quantizer does, so XNNPACK runs it in
    # int8 instead of float between two converts.
    ann = QuantizationAnnotation(
        input_qspec_map={src: SharedQuantizationSpec(src) if quantized else activation_spec(cfg)},
        output_qspec=SharedQuantizationSpec((src, node)),
    )
    return Annotation({node: ann}, (node,))


def annotate_cat(node: Node, cfg: QuantConfig) -> Annotation | Rejected:
    """One set of qparams for every input and the output (XNNPACK's qs8 concatenate needs it).

    Quantized when an input is already int8 or the result feeds an int8 consumer; the
    first quantized input sets the qparams (else the first input gets an observer).
    """
    inputs = list(node.args[0])
    if not all(is_float_tensor(i) for i in inputs):
        return Rejected("an input is not a floating-point tensor")
    quantized = [i for i in inputs if output_is_quantized(i)]
    if not quantized and not feeds_int8(node):
        return Rejected("no input is quantized and its result only feeds float ops")
    source = (quantized or inputs)[0]
    shared = SharedQuantizationSpec((source, node))
    qspecs = {source: SharedQuantizationSpec(source) if quantized else activation_spec(cfg)}
    qspecs.update({i: shared for i in inputs if i is not source})  # cat([h, h]) shares h once
    ann = QuantizationAnnotation(input_qspec_map=qspecs, output_qspec=shared)
    return Annotation({node: ann}, (node,))
