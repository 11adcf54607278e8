"""ONNX graph passes, one per file, run in the order `qdq_passes` / `qop_passes` list them.

Each is an onnx_ir in-place pass: `call(model) -> PassResult` with a truthful `modified`.
`run_passes` wraps a failure in LoweringError naming the pass.
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx_ir as ir
from onnx_ir.passes.common import (
    ClearMetadataAndDocStringPass,
    DeduplicateInitializersPass,
    RemoveUnusedNodesPass,
    TopologicalSortPass,
)

from backends.onnx.passes.clamp_masked_softmax import ClampMaskedSoftmaxPass
from backends.onnx.passes.collapse_dynamic_quantize import CollapseDynamicQuantizePass
from backends.onnx.passes.convert_activation_dtype import ConvertActivationDtypePass
from backends.onnx.passes.flatten_residual_layer_norm import FlattenResidualLayerNormPass
from backends.onnx.passes.fold_weight_transpose import FoldWeightTransposePass
from backends.onnx.passes.fuse_qgemm import FuseQGemmPass
from backends.onnx.passes.fuse_qlinear_conv import FuseQLinearConvPass
from backends.onnx.passes.fuse_qlinear_matmul import FuseQLinearMatMulPass
from backends.onnx.passes.gather_before_dequantize import GatherBeforeDequantizePass
from backends.onnx.passes.keep_dynamic_conv_float import KeepDynamicConvFloatPass
from backends.onnx.passes.keep_gemm_output_float import KeepGemmOutputFloatPass
from backends.onnx.passes.manager import run_passes
from backends.onnx.passes.name_dynamic_axes import NameDynamicAxesPass
from backends.onnx.passes.name_layer_nodes import NameLayerNodesPass
from backends.onnx.passes.quantize_activation_rows import QuantizeActivationRowsPass
from backends.onnx.passes.quantize_bias import QuantizeBiasPass
from backends.onnx.passes.rewrite_dynamic_linear import RewriteDynamicLinearPass
from backends.onnx.passes.rewrite_linear_as_gemm import RewriteLinearAsGemmPass
from backends.onnx.passes.shift_weights_to_uint8 import ShiftWeightsToUint8Pass

DYNAMIC_ACTS = ("per-row", "per-tensor")


def qdq_passes(
    *, act_dtype: ir.DataType, weight_dtype: str = "auto", dynamic_act: str = "per-row",
    layer_names: Mapping[str, str] | None = None,
) -> list[ir.passes.PassBase]:
    """The QDQ pipeline: canonical, fusable QuantizeLinear/DequantizeLinear around each int8 layer,
    then the rewrites that make ONNX Runtime's CPU provider fast on transformers.

    `weight_dtype`: "auto" (uint8 unless the weights fit 7 bits), "uint8" (always) or "int8" (never shift).
    `dynamic_act`: "per-row" (one scale per token, MatMulIntegerToFloat) or "per-tensor" (DynamicQuantizeLinear).
    `layer_names` maps exported fx node names to the converted graph's (coverage) node names.
    """
    passes: list[ir.passes.PassBase] = [
        NameLayerNodesPass(layer_names or {}),
        CollapseDynamicQuantizePass(),
        KeepDynamicConvFloatPass(),
        FoldWeightTransposePass(),
        GatherBeforeDequantizePass(),
        QuantizeBiasPass(),
        RewriteLinearAsGemmPass(),
        KeepGemmOutputFloatPass(),
    ]
    if weight_dtype != "int8":
        passes.append(ShiftWeightsToUint8Pass(force=weight_dtype == "uint8"))
    passes.append(RewriteDynamicLinearPass())
    if dynamic_act == "per-row":
        passes.append(QuantizeActivationRowsPass())
    passes += [
        ClampMaskedSoftmaxPass(),
        FlattenResidualLayerNormPass(),
        ConvertActivationDtypePass(act_dtype),
        # The weight passes write a transposed / shifted copy per use: an unrolled LSTM reads one
        # W_hh at every step, and without this its file held 48 copies (3.3 MB instead of 0.3 MB).
        # (the byte-compare variant: the hashed one fails on a non-contiguous initializer torch.onnx writes)
        DeduplicateInitializersPass(size_limit=1 << 31),
        RemoveUnusedNodesPass(),
        NameDynamicAxesPass(),
        ClearMetadataAndDocStringPass(),
        TopologicalSortPass(),
    ]
    return passes


def qop_passes() -> list[ir.passes.PassBase]:
    """Run after `qdq_passes`: fold each int8 layer's Q/DQ into an explicit int8 operator."""
    return [
        FuseQGemmPass(),
        FuseQLinearMatMulPass(),
        FuseQLinearConvPass(),
        RemoveUnusedNodesPass(),
        TopologicalSortPass(),
    ]


__all__ = [
    "DYNAMIC_ACTS",
    "ClampMaskedSoftmaxPass",
    "CollapseDynamicQuantizePass",
    "ConvertActivationDtypePass",
    "FlattenResidualLayerNormPass",
    "FoldWeightTransposePass",
    "FuseQGemmPass",
    "GatherBeforeDequantizePass",
    "FuseQLinearConvPass",
    "FuseQLinearMatMulPass",
    "KeepDynamicConvFloatPass",
    "KeepGemmOutputFloatPass",
    "NameDynamicAxesPass",
    "QuantizeBiasPass",
    "NameLayerNodesPass",
    "QuantizeActivationRowsPass",
    "RewriteDynamicLinearPass",
    "RewriteLinearAsGemmPass",
    "ShiftWeightsToUint8Pass",
    "qdq_passes",
    "qop_passes",
    "run_passes",
]
