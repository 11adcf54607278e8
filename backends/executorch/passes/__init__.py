"""Lowering passes over the converted GraphModule, one per file, run before export.

The lists below are the registration: explicit, in order (no import side effects).
"""

from backends.executorch.passes.decompose_layer_norm import DecomposeLayerNormPass
from backends.executorch.passes.decompose_quant_ops import DecomposeQuantOpsPass
from backends.executorch.passes.expand_per_tensor_weight import ExpandPerTensorWeightPass
from backends.executorch.passes.flatten_to_view import ReplaceSymbolicReshapePass
from backends.executorch.passes.fold_bias_dequant import FoldBiasDequantPass
from backends.executorch.passes.fold_weight_only_dequant import FoldWeightOnlyDequantPass
from backends.executorch.passes.manager import PassManager
from backends.executorch.passes.select_to_slice import ReplaceSelectWithSlicePass
from backends.executorch.passes.split_to_slices import ReplaceSplitWithSlicesPass
from pt2e_int8.transforms.decompose_recurrent import DecomposeRecurrentPass


def xnnpack_passes() -> list:
    """What a converted graph needs so each int8 layer becomes one XNNPACK kernel."""
    return [
        # A float model's LSTM / GRU / RNN (a quantized one was decomposed before annotation):
        # to_edge's own GRU decomposition fixes the batch, and the linears delegate either way.
        DecomposeRecurrentPass(),
        FoldBiasDequantPass(),
        FoldWeightOnlyDequantPass(),
        ExpandPerTensorWeightPass(),
        ReplaceSplitWithSlicesPass(),
        ReplaceSelectWithSlicePass(),
        ReplaceSymbolicReshapePass(),
        DecomposeLayerNormPass(),
    ]


def portable_passes() -> list:
    """No delegate: every q/dq becomes aten arithmetic, which the portable runtime has."""
    return [DecomposeRecurrentPass(), FoldBiasDequantPass(), ReplaceSplitWithSlicesPass(), DecomposeQuantOpsPass()]


__all__ = [
    "DecomposeLayerNormPass",
    "DecomposeQuantOpsPass",
    "ExpandPerTensorWeightPass",
    "FoldBiasDequantPass",
    "FoldWeightOnlyDequantPass",
    "PassManager",
    "ReplaceSelectWithSlicePass",
    "ReplaceSplitWithSlicesPass",
    "ReplaceSymbolicReshapePass",
    "portable_passes",
    "xnnpack_passes",
]
