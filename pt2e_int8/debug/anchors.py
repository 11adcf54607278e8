"""Where a layer's result is read in a converted graph, and which module path a choice targets.

The debugger, the artifact debuggers (backends/) and the search all compare "a layer's output"
and choose "a layer's precision": both are defined once, here.
"""

from __future__ import annotations

from torch.fx import Node

from pt2e_int8.annotators.framework import fused_activation
from pt2e_int8.qdq import is_dequantize, is_dynamic_dequantize, is_quantize
from pt2e_int8.quantizer import module_stack


def layer_anchor(node: Node) -> Node:
    """The node whose float value is the layer's result: its fused clamp-like activation, if
    any (XNNPACK and ONNX Runtime run linear + relu as one kernel), else the layer itself."""
    return fused_activation(node) or node


def layer_output(node: Node) -> Node:
    """The node holding the layer's result as its consumers see it.

    For a layer whose output is quantized with static qparams, that is the dequantize after the
    output quantize: output rounding is part of the layer's error. Otherwise it is the anchor
    (a dynamic consumer quantizes inside its own kernel, where no runtime can show the value).
    """
    anchor = layer_anchor(node)
    for user in anchor.users:
        if is_quantize(user):
            dequantized = [u for u in user.users if is_dequantize(u) and not is_dynamic_dequantize(u)]
            if dequantized:
                return dequantized[0]
    return anchor


def output_step(node: Node) -> float | None:
    """Quantization step of a layer's output (scale of its output quantize), None if float."""
    out = layer_output(node)
    if out is layer_anchor(node) or not is_dequantize(out):
        return None
    scale = out.args[1] if len(out.args) > 1 else None
    return float(scale) if isinstance(scale, int | float) else None


def unit_of(node: Node) -> str | None:
    """The module path `Int8Quantizer.set_module_name` would target for this layer node: the
    innermost module on its stack. None for an op outside any named module (not choosable)."""
    stack = module_stack(node)
    path = stack[-1][0] if stack else ""
    return path or None
