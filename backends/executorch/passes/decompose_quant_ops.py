"""Rewrite quantize / dequantize / choose_qparams into plain aten arithmetic.

    quantize_per_tensor(x, s, zp)      ⇒  clamp(round(x * (1/s)) + zp, qmin, qmax).to(int8)
    dequantize_per_tensor(q, s, zp)    ⇒  (q.to(f32) - zp) * s
    dequantize_per_channel(q, S, ZP)   ⇒  (q.to(f32) - ZP.view(..)) * S.view(..)
    choose_qparams(x)                  ⇒  (scale, zp) from aminmax, as torchao computes them

Why: the ExecuTorch 1.5.1 runtime in the pip wheel registers no `quantized_decomposed`
kernel at all (240 operators, all aten / dim_order / prim), so a q/dq op left outside an
XNNPACK delegate, or any q/dq in a portable program, makes the .pte fail to load. Written
as aten ops, the same rounding runs on portable kernels: numerically the converted graph,
with int8 weights still stored as int8.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch
from torch.fx import GraphModule
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from pt2e_int8.qdq import QDQ_OPS

_qd = torch.ops.quantized_decomposed


def _quantize(x, scale, zero_point, quant_min, quant_max, dtype):
    inv_scale = 1.0 / scale
    return torch.clamp(torch.round(x * inv_scale) + zero_point, quant_min, quant_max).to(dtype)


def _dequantize(q, scale, zero_point, quant_min, quant_max, dtype, *, out_dtype=None):
    return (q.to(out_dtype or torch.float32) - zero_point) * scale


def _channel_view(t: torch.Tensor, axis: int, rank: int) -> torch.Tensor:
    shape = [1] * rank
    shape[axis] = -1
    return t.reshape(shape)


def _quantize_per_channel(x, scales, zero_points, axis, quant_min, quant_max, dtype):
    s, zp = _channel_view(scales, axis, x.dim()), _channel_view(zero_points, axis, x.dim())
    return torch.clamp(torch.round(x / s) + zp, quant_min, quant_max).to(dtype)


def _dequantize_per_channel(q, scales, zero_points, axis, quant_min, quant_max, dtype, *, out_dtype=None):
    s = _channel_view(scales, axis, q.dim())
    q = q.to(out_dtype or torch.float32)
    if zero_points is None:
        return q * s
    return (q - _channel_view(zero_points, axis, q.dim())) * s


def _choose_qparams(x, quant_min, quant_max, eps, dtype):
    zero = torch.zeros((), dtype=x.dtype)
    min_neg = torch.minimum(torch.amin(x), zero)
    max_pos = torch.maximum(torch.amax(x), zero)
    scale = torch.clamp((max_pos - min_neg) / float(quant_max - quant_min), min=eps)
    zero_point = torch.clamp(quant_min - torch.round(min_neg / scale), quant_min, quant_max)
    return scale.reshape(1), zero_point.to(torch.int64).reshape(1)


def _choose_qparams_symmetric(x, quant_min, quant_max, eps, dtype):
    zero = torch.zeros((), dtype=x.dtype)
    max_pos = torch.maximum(-torch.minimum(torch.amin(x), zero), torch.maximum(torch.amax(x), zero))
    scale = torch.clamp(max_pos / (float(quant_max - quant_min) / 2), min=eps)
    zp = 128 if dtype == torch.uint8 else 0
    return scale.reshape(1), torch.full((1,), zp, dtype=torch.int64)


# op -> the aten-only function with the op's signature
_DECOMPOSITIONS: dict[torch._ops.OpOverload, Callable] = {
    _qd.quantize_per_tensor.default: _quantize,
    _qd.quantize_per_tensor.tensor: _quantize,
    _qd.quantize_per_tensor.tensor2: _quantize,
    _qd.dequantize_per_tensor.default: _dequantize,
    _qd.dequantize_per_tensor.tensor: _dequantize,
    _qd.dequantize_per_tensor.tensor2: _dequantize,
    _qd.quantize_per_channel.default: _quantize_per_channel,
    _qd.dequantize_per_channel.default: _dequantize_per_channel,
    _qd.choose_qparams.tensor: _choose_qparams,
    _qd.choose_qparams_symmetric.tensor: _choose_qparams_symmetric,
}
assert set(_DECOMPOSITIONS) == set(QDQ_OPS), "every q/dq op of pt2e_int8.qdq needs a decomposition"


class DecomposeQuantOpsPass(PassBase):
    """Replace q/dq/choose_qparams nodes by aten arithmetic, so export traces portable ops.

    Fires on every q/dq node, or only on the nodes named in `only` (the ones the XNNPACK
    partitioner left outside its delegates). Leaves every other node alone.
    """

    def __init__(self, only: Collection[str] | None = None) -> None:
        super().__init__()
        self.only = None if only is None else frozenset(only)

    def call(self, graph_module: GraphModule) -> PassResult:
        modified = False
        for node in graph_module.graph.nodes:
            if node.op != "call_function" or node.target not in _DECOMPOSITIONS:
                continue
            if self.only is not None and node.name not in self.only:
                continue
            node.target = _DECOMPOSITIONS[node.target]
            modified = True
        return PassResult(graph_module, modified)
