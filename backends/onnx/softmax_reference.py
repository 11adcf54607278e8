"""Softmax in the ONNX file's reference, computed by the kernel the file runs: ONNX Runtime's.

    softmax(x, dim)  ⇒  ort_softmax(x, dim)
        (one ONNX `Softmax(axis=dim)` node in an ONNX Runtime CPU session, made once per
         (rank, dim), run on the reference's own input)

Why: ONNX Runtime computes Softmax with MLAS's kernel (its own vectorized exp and summation
order, chosen per instruction set), torch with ATen's (Sleef's exp, another order). They differ in
the last bit of ~3 % of the probabilities (6,576 of 196,608 in all-MiniLM-L6-v2's layer-2 attention,
sentence 4 below), and where a Softmax feeds a static quantize, a probability at a rounding tie
lands on the other int8 level; through the next layers that one level grows. On static
all-MiniLM-L6-v2 (seq 128, 16 held-out sentences), sentence 4's encoder layer 2, head 2, query 8,
key 8: ONNX Runtime's Softmax gives 0.09032518, exactly 23.5 output steps (scale 0.0038436246),
torch's 0.09032517 (23.499998); QuantizeLinear rounds the tie to even, 24 against 23, the next
matmul is one step off and the file ended 16.38 output steps from a reference computing torch's
softmax. ONNX Runtime's plain `Softmax` on the reference's own input reproduces that value (and the
file's whole Dequantize → Mul → Add → Max-clamp → Softmax → QuantizeLinear chain, evaluated on the
reference's int8 Q·Kᵀ and mask, flips that one element and no other). The graph optimizer fuses
nothing around it: the optimized graph still has Mul, Add, ClampMaskedSoftmaxPass's
ReduceMax/Sub/Max and a plain Softmax. Torch's ops cannot reproduce MLAS's bits, and MLAS's exp
differs between AVX-512 and AVX2 kernels.

So the reference evaluates only this op, on its own inputs, with ONNX Runtime on this CPU, as
`xnnpack_reference` does for LayerNorm: it never runs the artifact, and everything else stays
the reference's own. ClampMaskedSoftmaxPass's clamp is not modelled: it changes only masked
probabilities (0 → < 1.8e-35, every other probability bit for bit the same on MiniLM), and those
quantize to the zero point either way.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule

from backends.onnx.single_op import run_single_op
from pt2e_int8.transforms.graph_edit import retarget

aten = torch.ops.aten

_SOFTMAX_OPSET = 13  # Softmax's current definition (opset 13+: over one axis)


def ort_softmax(x: torch.Tensor, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`aten.softmax.int` as ONNX Runtime's CPU Softmax computes it (see the module docstring).

    Example:
        ort_softmax(scores, -1)   # torch.softmax(scores, -1) up to MLAS's last bits
    """
    if x.dtype != torch.float32 or (dtype is not None and dtype != torch.float32) or x.dim() == 0 \
            or x.numel() == 0:
        return aten.softmax.int(x, dim, dtype)
    y = run_single_op("Softmax", [x.detach().contiguous().numpy()], opset=_SOFTMAX_OPSET, axis=dim % x.dim())
    return torch.from_numpy(y)


def rewrite_softmaxes(gm: GraphModule) -> bool:
    """Point every `aten.softmax.int` of `gm` at `ort_softmax`, in place (torch.onnx writes each
    as one ONNX Softmax over the same axis)."""
    return retarget(gm, lambda node: node.target == aten.softmax.int, ort_softmax)
