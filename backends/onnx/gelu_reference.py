"""GELU in the ONNX file's reference, computed by the kernel the file runs: ONNX Runtime's.

    gelu(x, approximate)  ⇒  ort_gelu(x, approximate)
        (one ONNX `Gelu` node, opset 20, in an ONNX Runtime CPU session, run on the reference's input)

Why: ONNX Runtime's Gelu evaluates erf with MLAS's vectorized polynomial, torch with its own;
the two differ in the last bit of some outputs. Where a GELU feeds a static quantize (BERT's FFN
down-projection input), an output at a rounding tie lands on the other int8 level, and the next
layers grow that one level: on all-MiniLM-L6-v2 with outlier handling, once the FFN
up-projection writes float (passes/keep_gemm_output_float.py) and GELU sees arbitrary fp32
inputs, one of 16 held-out sentences ended 5.6 output steps from a reference with torch's GELU.
As for Softmax (`softmax_reference`), the reference evaluates only this op with ONNX Runtime on
this CPU; everything else stays the reference's own.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule

from backends.onnx.single_op import run_single_op
from pt2e_int8.transforms.graph_edit import retarget

aten = torch.ops.aten

_GELU_OPSET = 20  # the first opset with a standard Gelu, the one torch.onnx writes


def ort_gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """`aten.gelu.default` as ONNX Runtime's CPU Gelu computes it (see the module docstring).

    Example:
        ort_gelu(h)   # torch.nn.functional.gelu(h) up to MLAS's last bits
    """
    if x.dtype != torch.float32 or x.dim() == 0 or x.numel() == 0:
        return aten.gelu.default(x, approximate=approximate)
    y = run_single_op("Gelu", [x.detach().contiguous().numpy()], opset=_GELU_OPSET, approximate=approximate)
    return torch.from_numpy(y)


def rewrite_gelus(gm: GraphModule) -> bool:
    """Point every `aten.gelu.default` of `gm` at `ort_gelu`, in place (torch.onnx writes each as one Gelu)."""
    return retarget(gm, lambda node: node.target == aten.gelu.default, ort_gelu)
