"""LayerNorm in the ONNX file's reference, computed by the kernel the file runs: ONNX Runtime's.

    layer_norm(x, shape, w, b, eps)  ⇒  ort_layer_norm(x, shape, w, b, eps)
        (one ONNX `LayerNormalization(axis=-1, epsilon=eps)` over x's rows of prod(shape)
         values, affine included, in an ONNX Runtime CPU session; run on the reference's own input)

Why: ONNX Runtime's CPU LayerNormalization (`layer_norm_impl.cc`) sums x and x² in one sequential
fp32 loop, takes the variance as E[x²] − mean², divides by sqrt(var + eps) and applies the affine
in its own expression; ATen's CPU kernel takes the moments with a vectorized Welford pass
(`RowwiseMoments`) and multiplies by a precomputed 1/std. The outputs differ in the last bits (43 % of all-MiniLM-L6-v2's LayerNorm outputs, by up to
2e-6), and where a LayerNorm feeds a static quantize, a value at a rounding tie lands on the other
int8 level; through the next layers that one level grows. On the smooth_insert QAT all-MiniLM-L6-v2
(seq 128, 16 held-out sentences), sentence 7's encoder layer 2 output LayerNorm, token 1, channel
279: ONNX Runtime's LayerNorm times the inserted smoothing multiply gives exactly −62.5 steps of the
next QuantizeLinear (scale 0.010894690), torch's −62.500004; QuantizeLinear rounds the tie to even,
−62 against −63, layer 3's query/key/value are one step off and the file ended 4.11 output steps
from a reference computing torch's LayerNorm (0.00 with this one, and 0.91 → 0.00 for smooth_insert
PTQ). The file's LayerNormalizations stay plain in ONNX Runtime's optimized graph (FlattenResidual-
LayerNormPass keeps SkipLayerNormFusion off them); the kernel works row by row, so the rows'
layout (the file flattens to 2-D) does not change a bit.

So the reference evaluates only this op, on its own inputs, with ONNX Runtime on this CPU, as
`softmax_reference` does for Softmax: it never runs the artifact, and everything else stays the
reference's own. Non-fp32 LayerNorms stay torch's.
"""

from __future__ import annotations

import math

import torch
from torch.fx import GraphModule

from backends.onnx.single_op import run_single_op
from pt2e_int8.transforms.graph_edit import retarget

aten = torch.ops.aten

_LAYER_NORM_OPSET = 17  # LayerNormalization entered the default domain in opset 17


def ort_layer_norm(x: torch.Tensor, normalized_shape, weight: torch.Tensor | None = None,
                   bias: torch.Tensor | None = None, eps: float = 1e-5, cudnn_enable: bool = True
                   ) -> torch.Tensor:
    """`aten.layer_norm` as ONNX Runtime's CPU LayerNormalization computes it (see the module
    docstring).

    Example:
        ort_layer_norm(x, [384], w, b, 1e-12)   # F.layer_norm(x, [384], w, b, 1e-12) up to ORT's last bits
    """
    n = math.prod(normalized_shape)
    if x.dtype != torch.float32 or x.numel() == 0 or n == 0 \
            or any(t is not None and t.dtype != torch.float32 for t in (weight, bias)):
        return aten.layer_norm.default(x, normalized_shape, weight, bias, eps, cudnn_enable)
    scale = torch.ones(n) if weight is None else weight.detach().reshape(n)
    inputs = [x.detach().reshape(-1, n).contiguous().numpy(), scale.contiguous().numpy()]
    if bias is not None:
        inputs.append(bias.detach().reshape(n).contiguous().numpy())
    y = run_single_op("LayerNormalization", inputs, opset=_LAYER_NORM_OPSET, axis=-1, epsilon=float(eps))
    return torch.from_numpy(y).reshape(x.shape)


def rewrite_layer_norms(gm: GraphModule) -> bool:
    """Point every `aten.layer_norm.default` of `gm` at `ort_layer_norm`, in place (torch.onnx
    writes each as one ONNX LayerNormalization over the same trailing dimensions)."""
    return retarget(gm, lambda node: node.target == aten.layer_norm.default, ort_layer_norm)
