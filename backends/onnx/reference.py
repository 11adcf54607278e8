"""The PyTorch model that computes what ONNX Runtime computes for a QDQ file from `export_onnx`.

Six differences from the converted graph. Five are a one-step flip at a rounding tie, which a
transformer grows by 2–4× per layer (bench/issue11/steps/GROWTH.md); the first is by design:

- a static linear read only by float ops (the residual add, GELU) writes float, not int8
  (passes/keep_gemm_output_float.py, `float_output_reference`): one rounding fewer;

- static int8 layers: QGemm / QLinearMatMul / QLinearConv accumulate exactly in int32 and
  requantize once (`pt2e_int8.int8_reference`), where the graph sums dequantized values in fp32;
- QuantizeLinear divides, `round(x / scale)` (the ONNX operator's definition, and MLAS's kernel),
  where torch's `quantize_per_tensor` multiplies by `1 / scale`; the two round differently about
  once per 4 million random inputs (XNNPACK multiplies, as torch does);
- Softmax is ONNX Runtime's own, evaluated on the reference's input (`softmax_reference`): MLAS's
  exp and sum differ from ATen's in the last bit, and one such bit at a tie put static MiniLM's
  file 16.38 output steps from a reference with torch's softmax;
- LayerNorm is ONNX Runtime's own too (`layer_norm_reference`): its one-pass fp32 sums differ from
  ATen's in the last bits, and one at a tie put the smooth_insert QAT MiniLM file 4.11 steps off;
- GELU is ONNX Runtime's own too (`gelu_reference`): MLAS's erf differs from torch's in the
  last bit, which matters once GELU reads a float linear output rather than an int8 one.

Used by `debug_onnx` and bench `reference_steps`; never exported.
"""

from __future__ import annotations

import copy

import torch
from torch.fx import GraphModule

from backends.onnx.float_output_reference import keep_linear_outputs_float
from backends.onnx.gelu_reference import rewrite_gelus
from backends.onnx.layer_norm_reference import rewrite_layer_norms
from backends.onnx.softmax_reference import rewrite_softmaxes
from pt2e_int8.int8_reference import int8_reference
from pt2e_int8.transforms.graph_edit import retarget

_qd = torch.ops.quantized_decomposed


def quantize_by_division(x: torch.Tensor, scale: float, zero_point: int, qmin: int, qmax: int,
                         dtype: torch.dtype) -> torch.Tensor:
    """ONNX QuantizeLinear: saturate(round(x / scale) + zero_point), in fp32, ties to even."""
    q = torch.round(x.float() / torch.tensor(scale, dtype=torch.float32)) + zero_point
    return q.clamp(qmin, qmax).to(dtype)


def onnx_reference(gm: GraphModule) -> GraphModule:
    """A copy of the converted `gm` computing static int8 layers and activation quantization as
    ONNX Runtime does. `gm` is left unchanged; a module without an FX graph is returned as it is.

    Example:
        ref = onnx_reference(qm)
        (ref(x) - load_onnx("model.onnx").run([x])[0]).abs().max()   # 0 where qm(x) may be a step off
    """
    if not isinstance(getattr(gm, "graph", None), torch.fx.Graph):
        return gm
    gm = copy.deepcopy(gm)
    gm = int8_reference(gm, float_outputs=keep_linear_outputs_float(gm))  # another copy
    graph = gm.graph
    changed = rewrite_softmaxes(gm)
    changed = rewrite_layer_norms(gm) or changed
    changed = rewrite_gelus(gm) or changed
    changed = retarget(gm, lambda node: node.target == _qd.quantize_per_tensor.default,
                       quantize_by_division) or changed
    if changed:
        graph.lint()
        gm.recompile()
    return gm
