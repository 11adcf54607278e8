"""Lowering passes over the converted GraphModule, one per file, run before export.

The lists below are the registration: explicit, in order (no import side effects).
"""

from backends.executorch.passes.decompose_layer_norm import DecomposeLayerNormPass
from backends.executorch.passes.decompose_quant_ops import DecomposeQuantOpsPass
from backends.executorch.passes.expand_per_tensor_weight import ExpandPerTensorWeightPass
from backends.executorch.passes.fold_bias_dequant import FoldBiasDequantPass
from backends.executorch.passes.fold_weight_only_dequant import FoldWeightOnlyDequantPass
from backends.executorch.passes.manager import PassManager
from backends.executorch.passes.matmul_to_bmm import ReplaceMatmulWithBmmPass
from backends.executorch.passes.split_to_slices import ReplaceSplitWithSlicesPass


def xnnpack_passes() -> list:
    """What a converted graph needs so each int8 layer becomes one XNNPACK kernel."""
    return [
        FoldBiasDequantPass(),
        FoldWeightOnlyDequantPass(),
        ExpandPerTensorWeightPass(),
        ReplaceSplitWithSlicesPass(),
        DecomposeLayerNormPass(),
        ReplaceMatmulWithBmmPass(),
    ]


def portable_passes() -> list:
    """No delegate: every q/dq becomes aten arithmetic, which the portable runtime has."""
    return [FoldBiasDequantPass(), ReplaceSplitWithSlicesPass(), DecomposeQuantOpsPass()]


__all__ = [
    "DecomposeLayerNormPass",
    "DecomposeQuantOpsPass",
    "ExpandPerTensorWeightPass",
    "FoldBiasDequantPass",
    "FoldWeightOnlyDequantPass",
    "PassManager",
    "ReplaceMatmulWithBmmPass",
    "ReplaceSplitWithSlicesPass",
    "portable_passes",
    "xnnpack_passes",
]
