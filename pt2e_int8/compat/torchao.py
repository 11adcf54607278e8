"""torchao 0.18.0 internals pt2e-int8 relies on, and why no public API does the job.

`PRIVATE_SYMBOLS` lists each one; tests/core/test_compat.py fails when an upgrade removes it.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch.fx import GraphModule, Node
from torchao.quantization.pt2e import export_utils, qat_utils
from torchao.quantization.pt2e.fake_quantize import FusedMovingAvgObsFakeQuantize
from torchao.quantization.pt2e.quantizer import QuantizationAnnotation
from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

PINNED = "torchao==0.18.0"

# (module, attribute) of every private name used below.
PRIVATE_SYMBOLS = (
    (export_utils, "_replace_dropout"),
    (qat_utils, "_fold_conv_bn_qat_helper"),
    (QuantizationAnnotation, "_annotated"),
)

aten = torch.ops.aten


def missing_private_symbols() -> list[str]:
    """The private names above that this torchao no longer has (empty when all is well)."""
    return [f"{getattr(owner, '__name__', owner)}.{name}" for owner, name in PRIVATE_SYMBOLS
            if not hasattr(owner, name) and name not in getattr(owner, "__dataclass_fields__", {})]


# -- annotations ----------------------------------------------------------------------
# QuantizationAnnotation._annotated is how every torchao quantizer marks a node as claimed.
def is_annotated(node: Node) -> bool:
    ann = node.meta.get(Q_ANNOTATION_KEY)
    return ann is not None and ann._annotated


def set_annotation(node: Node, ann: QuantizationAnnotation | None = None) -> None:
    """Attach `ann` (or an empty claim) to `node`, marked annotated."""
    ann = ann or node.meta.get(Q_ANNOTATION_KEY) or QuantizationAnnotation()
    ann._annotated = True
    node.meta[Q_ANNOTATION_KEY] = ann


# -- train / eval of exported graphs -------------------------------------------------------
def replace_dropout(gm: GraphModule, *, train_to_eval: bool) -> None:
    """Swap dropout between its train and eval forms in an exported graph.

    The public `move_exported_model_to_eval/train` also rewrite batch-norm by pattern
    matching, which ignores custom momentum / eps (torchao's own TODO) and cannot keep BN
    statistics frozen across `.train()`; pt2e_int8.qat flips batch-norm's `training` argument
    itself and needs dropout only.
    """
    export_utils._replace_dropout(gm, train_to_eval=train_to_eval)


# -- QAT conv-bn folding ---------------------------------------------------------------
_CONV_FN_TO_OPS = {
    F.conv1d: {aten.conv1d.default},
    F.conv2d: {aten.conv2d.default},
    F.conv_transpose1d: {aten.conv_transpose1d.default},
    F.conv_transpose2d: {aten.conv_transpose2d.input},
}


@contextlib.contextmanager
def fold_only_present_conv_kinds():
    """During `convert_pt2e`, fold QAT conv-bn only for the conv kinds the graph has.

    torchao's `_fold_conv_bn_qat` matches 25 pattern graphs for each of conv1d, conv2d,
    conv_transpose1d and conv_transpose2d, each traced with a strict torch.export: ~100
    exports (10+ s on 2 cores) whatever the model holds. Skipping absent kinds gives the
    identical graph (a pattern of an absent op cannot match); a test compares the result
    with torchao's. No public switch exists, so the per-kind helper is wrapped for the
    duration of the call.
    """
    original = qat_utils._fold_conv_bn_qat_helper

    def helper(m, conv_fn, example_inputs, is_cuda):
        present = {n.target for n in m.graph.nodes if n.op == "call_function"}
        ops = _CONV_FN_TO_OPS.get(conv_fn)
        if ops is not None and not (ops & present):
            return m
        return original(m, conv_fn, example_inputs, is_cuda)

    qat_utils._fold_conv_bn_qat_helper = helper
    try:
        yield
    finally:
        qat_utils._fold_conv_bn_qat_helper = original


def conv_bn_fold_patched() -> bool:
    """Whether `fold_only_present_conv_kinds` is in effect (tests check it is undone after convert)."""
    return qat_utils._fold_conv_bn_qat_helper.__name__ != "_fold_conv_bn_qat_helper"


@contextlib.contextmanager
def convert_with_trained_qparams(prepared: torch.nn.Module):
    """During `convert_pt2e`, quantize on the grid the fake-quant forward uses.

    `convert_pt2e` asks each fake-quant module for `calculate_qparams()`, which
    `FusedMovingAvgObsFakeQuantize` (torchao's QAT default) answers from its observer. Its
    forward instead fake-quantizes with qparams ATen's fused kernel derives from the same
    statistics (`ChooseQuantizationParams`), and for symmetric ranges such as [-127, 127] the two
    differ: the kernel divides by 126.5 where the observer divides by 127. Training then fits the
    weights to one grid and convert rounded them on another, 0.39 % apart in every channel;
    all-MiniLM-L6-v2's static QAT lost 0.0001-0.0003 cosine in converting.

    The qparams are recomputed by that kernel from the observer's statistics (not read from the
    module's buffers), so ranks whose statistics `sync_observers` merged convert identically.
    """
    patched = []
    for module in prepared.modules():
        if isinstance(module, FusedMovingAvgObsFakeQuantize) and _has_observed(module):
            module.calculate_qparams = functools.partial(kernel_qparams, module)
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.calculate_qparams


def _has_observed(module: FusedMovingAvgObsFakeQuantize) -> bool:
    min_val = getattr(module.activation_post_process, "min_val", None)
    return isinstance(min_val, torch.Tensor) and min_val.numel() > 0 and bool(torch.isfinite(min_val).all())


def kernel_qparams(module: FusedMovingAvgObsFakeQuantize) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero point) as `module`'s forward computes them from its observer's statistics.

    Runs the fused kernel itself on copies, with the observer on and an averaging constant of 0
    (the statistics stay as they are), so the formula cannot drift from the one training used;
    the zeros it fake-quantizes on the way are thrown away.
    """
    obs = module.activation_post_process
    lo, hi = obs.min_val.detach().clone(), obs.max_val.detach().clone()
    scale, zero_point = module.scale.detach().clone(), module.zero_point.detach().clone()
    shape = [1] * max(module.ch_axis, 0) + [lo.numel(), 1]  # channels on ch_axis, and one more dim
    on = torch.ones(1, dtype=torch.long)  # qparams are chosen only when fake-quant is on, too
    torch.fused_moving_avg_obs_fake_quant(
        torch.zeros(shape, dtype=lo.dtype, device=lo.device), on, on, lo, hi, scale, zero_point, 0.0,
        obs.quant_min, obs.quant_max, module.ch_axis, module.is_per_channel, module.is_symmetric_quant)
    return scale, zero_point.to(torch.int64)
