"""Give a dynamically quantized layer's per-tensor weight one (equal) scale per channel.

    linear(dq_dyn(x), dq_per_tensor(w, s, 0))  ⇒  linear(dq_dyn(x), dq_per_channel(w, [s]*C, 0, axis=0))

Why: XNNPACK's qd8 GEMMs only take channelwise weights ("XNNPACK does not support per
tensor quantized weights for dynamic quantization of activations"); rejected, the layer
falls apart into a dozen portable ops. Repeating the scale is exactly the same weight.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from backends.executorch.passes.constants import constant_value, erase_dead_constants, is_constant
from pt2e_int8.ops import layer_op, layer_operands
from pt2e_int8.qdq import is_dequantize, is_dynamic_dequantize

_qd = torch.ops.quantized_decomposed


class ExpandPerTensorWeightPass(PassBase):
    """Fires on linear/conv layers with a dynamic int8 activation and a per-tensor int8
    weight constant. Leaves alone static layers (XNNPACK takes per-tensor qs8 weights) and
    weight-only layers.
    """

    def call(self, graph_module: GraphModule) -> PassResult:
        modified = False
        for node in list(graph_module.graph.nodes):
            if layer_op(node) is None:
                continue
            act, weight, _ = layer_operands(node)
            if not (isinstance(act, Node) and is_dequantize(act) and is_dynamic_dequantize(act)):
                continue
            if not (isinstance(weight, Node) and weight.target == _qd.dequantize_per_tensor.default
                    and is_constant(weight.args[0])):
                continue
            w_int8, scale, zp, qmin, qmax, dtype = weight.args[:6]
            channels = constant_value(graph_module, w_int8).shape[0]
            names = []
            for suffix, value in (("scales", torch.full((channels,), float(scale), dtype=torch.float32)),
                                  ("zero_points", torch.full((channels,), int(zp), dtype=torch.int64))):
                name = f"_{weight.name}_{suffix}"
                graph_module.register_buffer(name, value)
                names.append(name)
            with graph_module.graph.inserting_before(weight):
                s_node, zp_node = (graph_module.graph.get_attr(n) for n in names)
                per_channel = graph_module.graph.call_function(
                    _qd.dequantize_per_channel.default, (w_int8, s_node, zp_node, 0, qmin, qmax, dtype)
                )
            per_channel.meta.update(weight.meta)
            weight.replace_all_uses_with(per_channel)
            graph_module.graph.erase_node(weight)
            modified = True
        if modified:
            erase_dead_constants(graph_module)
        return PassResult(graph_module, modified)
