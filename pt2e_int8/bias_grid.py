"""Put each static int8 layer's float bias on its int32 grid, right after convert.

    linear(dq(x, sx), dq(W, sw), b)  ⇒  linear(dq(x, sx), dq(W, sw), round(b / (sx·sw)) · sx·sw)

Why: the converted graph keeps the bias float (`QuantConfig.quantize_bias=False`), the form
ExecuTorch's XNNPACK partitioner takes. Every int8 kernel computes with the int32 bias
round(b / (sx·sw)): XNNPACK derives it itself, the ONNX exporter writes it for QGemm and
QLinearConv. With the graph's bias on that grid, the converted graph computes exactly what the
kernels do, and both backends agree with it to the bit instead of one output step at a
rounding tie. Each bias moves by at most sx·sw / 2, far below one output step.
Static layers only: a dynamic activation's scale is known at run time only, and weight-only
layers compute in float.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from pt2e_int8.ops import layer_operands
from pt2e_int8.qdq import is_dequantize, is_dynamic_dequantize
from pt2e_int8.transforms.graph_edit import constant, replace_constant

INT32 = torch.iinfo(torch.int32)


def _act_scale(node) -> float | None:
    if not isinstance(node, Node) or not is_dequantize(node) or is_dynamic_dequantize(node):
        return None
    scale = node.args[1]
    return float(scale) if isinstance(scale, int | float) else None


def _weight_scales(gm: GraphModule, node) -> torch.Tensor | None:
    if not isinstance(node, Node) or not is_dequantize(node) or constant(gm, node.args[0]) is None:
        return None
    scale = node.args[1]
    if isinstance(scale, int | float):
        return torch.tensor([float(scale)])
    value = constant(gm, scale)
    return value.reshape(-1).float() if value is not None else None


def snap_bias_to_int32_grid(gm: GraphModule) -> int:
    """Snap every static int8 layer's float bias constant in place; returns how many moved."""
    snapped = 0
    for node in gm.graph.nodes:
        act, weight, bias = layer_operands(node)
        b = constant(gm, bias)
        if b is None or b.dtype != torch.float32 or b.dim() != 1 or len(bias.users) != 1:
            continue
        sx, sw = _act_scale(act), _weight_scales(gm, weight)
        if sx is None or sw is None or sw.numel() not in (1, b.numel()):
            continue
        scale = torch.tensor(sx, dtype=torch.float32) * sw
        grid = torch.clamp(torch.round(b.detach() / scale), INT32.min, INT32.max) * scale
        replace_constant(gm, bias, grid)  # rebinds (never writes into) the user's tensor
        snapped += 1
    return snapped
