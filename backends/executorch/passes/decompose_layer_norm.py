"""Write LayerNorm over the last dimension with ops XNNPACK has, reductions as matmuls.

    layer_norm(x, [D], w, b, eps)  ⇒  m = linear(x, 1/D)   d = x - m   v = linear(d*d, 1/D)
                                      y = d * rsqrt(v + eps) * w + b

Why: ExecuTorch 1.5.1's XNNPACK partitioner has no layer_norm, so each LayerNorm ends a
delegate and starts the next one (a BERT encoder becomes 27 delegate calls). XNNPACK's
mean only pools 4-D tensors over H and W, which would need reshapes that cannot be
delegated with a dynamic batch; a [1, D] fully-connected with weights 1/D is the same
mean and keeps any leading shape. Everything here is f32, as the op was.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from backends.executorch.passes.constants import constant_value, is_constant

aten = torch.ops.aten


def _last_dim(node: Node) -> int | None:
    """D when the node normalizes over exactly the last dimension with a static size."""
    shape = node.args[1]
    if not (isinstance(shape, list | tuple) and len(shape) == 1 and isinstance(shape[0], int)):
        return None
    return shape[0]


def decomposed_dim(node: Node) -> int | None:
    """D when DecomposeLayerNormPass rewrites `node` (a layer_norm over the last dimension of known
    size D whose weight and bias, if any, are constants), else None. The reference that models the
    .pte's LayerNorm (backends/executorch/layer_norm_reference.py) asks the same question."""
    if node.op != "call_function" or node.target is not aten.layer_norm.default:
        return None
    args = list(node.args) + [None] * (5 - len(node.args))
    if any(a is not None and not is_constant(a) for a in args[2:4]):
        return None
    return _last_dim(node)


def _add_buffer(gm: GraphModule, base: str, value: torch.Tensor) -> str:
    name, i = base, 0
    while hasattr(gm, name):
        i += 1
        name = f"{base}_{i}"
    gm.register_buffer(name, value)
    return name


class DecomposeLayerNormPass(PassBase):
    """Fires on aten.layer_norm over the last dimension (size known) whose affine weight and
    bias, if any, are constants. Leaves alone norms over several dimensions, and any
    layer_norm whose weight is computed at run time.
    """

    def call(self, graph_module: GraphModule) -> PassResult:
        modified = False
        graph = graph_module.graph
        for node in list(graph.nodes):
            dim = decomposed_dim(node)
            if dim is None:
                continue
            args = list(node.args) + [None] * (5 - len(node.args))
            x, _, weight, bias, eps = args[:5]
            eps = 1e-5 if eps is None else float(eps)
            dtype = constant_value(graph_module, weight).dtype if weight is not None else torch.float32
            mean_w = _add_buffer(graph_module, f"_{node.name}_mean", torch.full((1, dim), 1.0 / dim, dtype=dtype))
            eps_t = _add_buffer(graph_module, f"_{node.name}_eps", torch.tensor([eps], dtype=dtype))
            with graph.inserting_before(node):
                w_mean, w_eps = graph.get_attr(mean_w), graph.get_attr(eps_t)
                mean = graph.call_function(aten.linear.default, (x, w_mean))
                centered = graph.call_function(aten.sub.Tensor, (x, mean))
                square = graph.call_function(aten.mul.Tensor, (centered, centered))
                var = graph.call_function(aten.linear.default, (square, w_mean))
                inv = graph.call_function(aten.rsqrt.default, (graph.call_function(aten.add.Tensor, (var, w_eps)),))
                out = graph.call_function(aten.mul.Tensor, (centered, inv))
                if weight is not None:
                    out = graph.call_function(aten.mul.Tensor, (out, weight))
                if bias is not None:
                    out = graph.call_function(aten.add.Tensor, (out, bias))
            for k in ("nn_module_stack", "stack_trace", "source_fn_stack"):
                if k in node.meta:
                    for n in (mean, centered, square, var, inv, out):
                        n.meta[k] = node.meta[k]
            node.replace_all_uses_with(out)
            graph.erase_node(node)
            modified = True
        return PassResult(graph_module, modified)
