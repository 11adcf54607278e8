"""LayerNorm in the .pte's reference, computed by the ops the .pte runs: XNNPACK's.

    layer_norm(x, [D], w, b, eps)  ⇒  xnnpack_layer_norm(x, [D], w, b, eps)
        (DecomposeLayerNormPass's ops — linear(x, 1/D), sub, mul, linear, add, rsqrt, mul, mul,
         add — lowered to XNNPACK once per shape, run on the reference's own input;
         the affine `* w + b` in torch, bit for bit what XNNPACK's two fp32 ops give)

Why: the .pte has no LayerNorm kernel; DecomposeLayerNormPass writes it as ops XNNPACK has, and
XNNPACK computes them its own way: the mean is a fully-connected sum in the GEMM kernel's order,
and `rsqrt` is the CPU's 14-bit (AVX-512) or 12-bit (AVX) estimate plus one Newton step, not a
correctly rounded 1/sqrt. The result differs from torch's `layer_norm` in the last bits
(≈ 5e-6 on MiniLM's LayerNorm outputs), and where a LayerNorm feeds a static quantize, a value at
a rounding tie lands on the other int8 level; through the next layers that one level grows.
On static + smooth all-MiniLM-L6-v2 (seq 128, 16 held-out sentences), XNNPACK's LayerNorm on the
reference's own inputs flipped one int8 value in five sentences (layers 0, 1, 4), and the one at a
real token (sentence 7, layer 1's output LayerNorm, token 4, channel 241) put the .pte 14.6
output steps from a reference computing torch's LayerNorm. Torch's ops cannot reproduce it bit
for bit: the same decomposition in torch flips elements of other sentences instead, and the
rsqrt estimate is CPU-specific (the .pte itself differs between an AVX-512 and an AVX2 machine).

So the reference evaluates only this op, on its own inputs, with the kernels the .pte uses on
this CPU, as `onnx_reference` models QuantizeLinear's division: it never runs the artifact, and
everything else (integer layers, requantization, the rest of the float graph) stays the
reference's own. LayerNorms DecomposeLayerNormPass leaves alone stay torch's (the .pte runs
them with the portable kernel, which is torch's).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule

from backends.executorch.passes.decompose_layer_norm import decomposed_dim
from pt2e_int8.transforms.graph_edit import retarget

aten = torch.ops.aten

# Lowered LayerNorm programs, by (rows, D, eps): lowering takes a second or more, a reference calls
# each LayerNorm once per input. The affine part is not in the program: XNNPACK multiplies by the
# weight and adds the bias as two correctly rounded fp32 ops, exactly as torch does, so one program
# per shape serves every LayerNorm of a model (all-MiniLM-L6-v2: 1 program, not 13).
_PROGRAMS: dict[tuple, object] = {}
_MAX_PROGRAMS = 64


class _Normalize(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x):
        return F.layer_norm(x, [self.dim], None, None, self.eps)


def _program(rows: torch.Tensor, eps: float):
    from backends.executorch.lower import lower_program
    from backends.executorch.runtime import load_pte

    key = (tuple(rows.shape), eps)
    program = _PROGRAMS.get(key)
    if program is None:
        lowered = lower_program(_Normalize(rows.shape[-1], eps).eval(), (rows,), dynamic_shapes=None)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "layer_norm.pte"
            path.write_bytes(lowered.edge.to_executorch().buffer)
            program = load_pte(path)  # keeps the program's bytes in memory
        if len(_PROGRAMS) >= _MAX_PROGRAMS:
            _PROGRAMS.clear()
        _PROGRAMS[key] = program
    return program


def xnnpack_layer_norm(x: torch.Tensor, normalized_shape, weight=None, bias=None, eps: float = 1e-5,
                       cudnn_enable: bool = True) -> torch.Tensor:
    """`aten.layer_norm` over the last dimension as the .pte computes it (see the module docstring).

    Example:
        xnnpack_layer_norm(x, [384], w, b, 1e-12)   # torch's layer_norm up to XNNPACK's last bits
    """
    if x.dtype != torch.float32 or x.numel() == 0:
        return aten.layer_norm.default(x, normalized_shape, weight, bias, eps, cudnn_enable)
    rows = x.detach().reshape(-1, x.shape[-1]).contiguous()
    out = _program(rows, float(1e-5 if eps is None else eps)).run([rows])[0].reshape(x.shape)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def rewrite_layer_norms(gm: GraphModule) -> bool:
    """Point every LayerNorm DecomposeLayerNormPass would decompose at `xnnpack_layer_norm`, in place."""
    return retarget(gm, lambda node: decomposed_dim(node) is not None, xnnpack_layer_norm)
