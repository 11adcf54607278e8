"""torch.onnx translations for the dynamic-quantization ops torchlib lacks or mistranslates.

    choose_qparams.tensor(x)            ⇒  DynamicQuantizeLinear(x) → (scale, uint8 zero point)
    quantize_per_tensor.tensor(x, s, z)   ⇒  QuantizeLinear(x, s, z)
    dequantize_per_tensor.tensor(q, s, z) ⇒  DequantizeLinear(q, s, z)

PT2E's dynamic int8 (range -128..127) and ONNX's DynamicQuantizeLinear (uint8 0..255) pick the
same scale and a zero point shifted by exactly 128, so the dequantized values are identical;
the quantized tensor is uint8 in ONNX. One difference: PT2E floors the scale at `eps`
(2**-12 here), DynamicQuantizeLinear does not; it matters only for inputs whose whole range
is below 255 * eps ≈ 0.06. `CollapseDynamicQuantizePass` then turns the QuantizeLinear that
repeats DynamicQuantizeLinear's work into its `y` output.
"""

from __future__ import annotations

import torch
import torchao.quantization.pt2e  # noqa: F401  (registers torch.ops.quantized_decomposed)
from onnxscript import ir
from onnxscript.onnx_opset import opset20 as op

_qd = torch.ops.quantized_decomposed
_QUANTIZED = (ir.DataType.UINT8, ir.DataType.INT8)


def _zero_point(zero_point, dtype: int):
    """A zero point in a quantized ONNX type: ours (uint8) as is, anything else cast to `dtype`."""
    if getattr(zero_point, "dtype", None) in _QUANTIZED:
        return zero_point
    return op.Cast(zero_point, to=dtype)


def choose_qparams_tensor(x, quant_min: int, quant_max: int, eps: float, dtype: int):
    _, scale, zero_point = op.DynamicQuantizeLinear(x)
    return scale, zero_point


def quantize_per_tensor_tensor(x, scale, zero_point, quant_min: int, quant_max: int, dtype: int):
    return op.QuantizeLinear(x, scale, _zero_point(zero_point, dtype))


def dequantize_per_tensor_tensor(
    q, scale, zero_point, quant_min: int, quant_max: int, dtype: int, out_dtype=None
):
    return op.DequantizeLinear(q, scale, _zero_point(zero_point, dtype))


# OpOverload -> translation function, handed to torch.onnx.export(custom_translation_table=...).
TRANSLATIONS = {
    _qd.choose_qparams.tensor: choose_qparams_tensor,
    _qd.quantize_per_tensor.tensor: quantize_per_tensor_tensor,
    _qd.dequantize_per_tensor.tensor: dequantize_per_tensor_tensor,
}
