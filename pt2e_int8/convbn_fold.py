"""Faster QAT convert: fold conv-bn only for the conv kinds the graph has.

torchao 0.18's `convert_pt2e` folds QAT conv-bn by matching 25 pattern graphs for each
of conv1d, conv2d, conv_transpose1d and conv_transpose2d, each traced with a strict
torch.export: ~100 exports (10+ s on a 2-core CPU) whatever the model holds. During our
`convert` the per-kind helper is wrapped to skip kinds absent from the graph; the
result is identical, since a pattern of an absent op cannot match.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torchao.quantization.pt2e import qat_utils

aten = torch.ops.aten

_CONV_FN_TO_OPS = {
    F.conv1d: {aten.conv1d.default},
    F.conv2d: {aten.conv2d.default},
    F.conv_transpose1d: {aten.conv_transpose1d.default},
    F.conv_transpose2d: {aten.conv_transpose2d.input},
}


@contextlib.contextmanager
def fold_only_present_conv_kinds():
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
