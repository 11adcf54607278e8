"""Fold the int32 bias dequantize into a float bias constant.

    linear(dq(x), dq(w), dq(bias_int32))  ⇒  linear(dq(x), dq(w), bias_f32)

Why: XNNPACK's GEMM configs take a bias only as a static parameter ("Expected bias to be
a static param"); with a dequantize in front, the linear is decomposed to addmm and left
outside the delegate. XNNPACK re-quantizes a float bias with act_scale * weight_scale, the
same scale the int32 bias has, so the fold is exact.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from backends.executorch.passes.constants import (
    constant_value,
    erase_dead_constants,
    evaluate_on_constants,
    is_constant,
    replace_with_constant,
)
from pt2e_int8.qdq import is_dequantize


class FoldBiasDequantPass(PassBase):
    """Fires on a dequantize of an int32 constant (static configs quantize bias to int32).

    Leaves alone int8 dequantizes (weights, activations) and float biases (dynamic,
    weight-only and QAT-folded conv biases).
    """

    def call(self, graph_module: GraphModule) -> PassResult:
        modified = False
        for node in list(graph_module.graph.nodes):
            if not is_dequantize(node) or not is_constant(node.args[0]):
                continue
            if constant_value(graph_module, node.args[0]).dtype != torch.int32:
                continue
            if not all(is_constant(a) for a in node.all_input_nodes):
                continue
            replace_with_constant(graph_module, node, evaluate_on_constants(graph_module, node), "f32")
            modified = True
        if modified:
            erase_dead_constants(graph_module)
        return PassResult(graph_module, modified)
