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

from backends.onnx.passes.collapse_dynamic_quantize import CollapseDynamicQuantizePass
from backends.onnx.passes.convert_activation_dtype import ConvertActivationDtypePass
from backends.onnx.passes.fold_weight_transpose import FoldWeightTransposePass
from backends.onnx.passes.fuse_qgemm import FuseQGemmPass
from backends.onnx.passes.fuse_qlinear_conv import FuseQLinearConvPass
from backends.onnx.passes.fuse_qlinear_matmul import FuseQLinearMatMulPass
from backends.onnx.passes.gather_before_dequantize import GatherBeforeDequantizePass
from backends.onnx.passes.manager import run_passes
from backends.onnx.passes.name_dynamic_axes import NameDynamicAxesPass
from backends.onnx.passes.name_layer_nodes import NameLayerNodesPass
from backends.onnx.passes.quantize_bias import QuantizeBiasPass
from backends.onnx.passes.rewrite_dynamic_linear import RewriteDynamicLinearPass
from backends.onnx.passes.rewrite_linear_as_gemm import RewriteLinearAsGemmPass
from backends.onnx.passes.shift_weights_to_uint8 import ShiftWeightsToUint8Pass


def qdq_passes(
    *, act_dtype: ir.DataType, weight_dtype: str = "auto", layer_names: Mapping[str, str] | None = None
) -> list[ir.passes.PassBase]:
    """The QDQ pipeline: canonical, fusable QuantizeLinear/DequantizeLinear around each int8 layer.

    `weight_dtype`: "auto" (uint8 unless the weights fit 7 bits), "uint8" (always) or "int8" (never shift).
    `layer_names` maps exported fx node names to the converted graph's (coverage) node names.
    """
    passes: list[ir.passes.PassBase] = [
        NameLayerNodesPass(layer_names or {}),
        CollapseDynamicQuantizePass(),
        FoldWeightTransposePass(),
        GatherBeforeDequantizePass(),
        QuantizeBiasPass(),
        RewriteLinearAsGemmPass(),
    ]
    if weight_dtype != "int8":
        passes.append(ShiftWeightsToUint8Pass(force=weight_dtype == "uint8"))
    passes.append(RewriteDynamicLinearPass())
    passes += [
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
    "CollapseDynamicQuantizePass",
    "ConvertActivationDtypePass",
    "FoldWeightTransposePass",
    "FuseQGemmPass",
    "GatherBeforeDequantizePass",
    "FuseQLinearConvPass",
    "FuseQLinearMatMulPass",
    "NameDynamicAxesPass",
    "QuantizeBiasPass",
    "NameLayerNodesPass",
    "RewriteDynamicLinearPass",
    "RewriteLinearAsGemmPass",
    "ShiftWeightsToUint8Pass",
    "qdq_passes",
    "qop_passes",
    "run_passes",
]
