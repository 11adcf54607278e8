"""Fold the weight dequantize of weight-only layers into a float weight constant.

    linear(x_f32, dq(w_int8), b)  ⇒  linear(x_f32, w_f32, b)

Why: ExecuTorch's XNNPACK partitioner has no float-activation × int8-weight GEMM (a
dequantized weight with a float activation is read as static quantization and rejected:
"Expected act input to be dequant node"), and the pip runtime has no dequantize kernel
outside a delegate. Folded, the layer is one XNNPACK f32 fully-connected: weight-only
int8 buys accuracy parity, not speed or file size, on this backend.
"""

from __future__ import annotations

from torch.fx import GraphModule, Node
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from backends.executorch.passes.constants import (
    erase_dead_constants,
    evaluate_on_constants,
    is_constant,
    replace_with_constant,
)
from pt2e_int8.ops import layer_op, layer_operands
from pt2e_int8.qdq import is_dequantize


class FoldWeightOnlyDequantPass(PassBase):
    """Fires on a linear/conv/matmul whose weight is dq(constant) and whose activation is float.

    Leaves alone layers with a dequantized activation (static or dynamic int8: XNNPACK
    runs those as int8 kernels) and activation × activation matmuls.
    """

    def call(self, graph_module: GraphModule) -> PassResult:
        modified = False
        for node in list(graph_module.graph.nodes):
            spec = layer_op(node)
            if spec is None or spec.family == "embedding":
                continue
            act, weight, _ = layer_operands(node)
            if isinstance(act, Node) and is_dequantize(act):
                continue
            if not (isinstance(weight, Node) and is_dequantize(weight)):
                continue
            if not all(is_constant(a) for a in weight.all_input_nodes) or len(weight.users) != 1:
                continue
            replace_with_constant(graph_module, weight, evaluate_on_constants(graph_module, weight), "f32")
            modified = True
        if modified:
            erase_dead_constants(graph_module)
        return PassResult(graph_module, modified)
