"""The op table: which aten ops are layers, where their operands sit, and which ops carry int8.

Every package reads these facts from here: the annotators (what to quantize and on which
weight axis), `coverage()` (which nodes are layer rows), the backends' passes and placement
(which node is the layer, which argument is its weight). Adding a layer op is one entry in
`LAYER_OPS` plus, if it is to be quantized, one annotator (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch.fx import Node

aten = torch.ops.aten


@dataclass(frozen=True)
class LayerOp:
    """Where a layer op's operands are. Positions index `node.args`."""

    # Row label in coverage: linear / conv / conv_transpose / matmul / attention / recurrent / embedding.
    family: str
    # The float activation input; None when the op has none (an embedding looks rows up by index).
    act: int | None
    # The weight; None when both operands are activations (attention matmuls, sdpa).
    weight: int | None
    bias: int | None = None
    # Output-channel axis of the weight: per-channel scales run along it (1 for transposed
    # convolutions, whose weight is [in, out/groups, ...], and for mm's [in, out] weight).
    weight_axis: int = 0


LAYER_OPS: dict[torch._ops.OpOverload, LayerOp] = {
    aten.linear.default: LayerOp("linear", act=0, weight=1, bias=2),
    aten.addmm.default: LayerOp("linear", act=1, weight=2, bias=0, weight_axis=1),
    aten.mm.default: LayerOp("matmul", act=0, weight=1, weight_axis=1),
    aten.matmul.default: LayerOp("matmul", act=0, weight=1, weight_axis=1),
    aten.bmm.default: LayerOp("matmul", act=0, weight=1),
    aten.conv1d.default: LayerOp("conv", act=0, weight=1, bias=2),
    aten.conv2d.default: LayerOp("conv", act=0, weight=1, bias=2),
    aten.conv3d.default: LayerOp("conv", act=0, weight=1, bias=2),
    # The edge dialect's single convolution op; args[6] (transposed) flips the weight axis.
    aten.convolution.default: LayerOp("conv", act=0, weight=1, bias=2),
    aten.conv_transpose1d.default: LayerOp("conv_transpose", act=0, weight=1, bias=2, weight_axis=1),
    aten.conv_transpose2d.input: LayerOp("conv_transpose", act=0, weight=1, bias=2, weight_axis=1),
    aten.conv_transpose3d.input: LayerOp("conv_transpose", act=0, weight=1, bias=2, weight_axis=1),
    aten.scaled_dot_product_attention.default: LayerOp("attention", act=0, weight=None),
    aten.lstm.input: LayerOp("recurrent", act=0, weight=None),
    aten.gru.input: LayerOp("recurrent", act=0, weight=None),
    aten.rnn_tanh.input: LayerOp("recurrent", act=0, weight=None),
    aten.rnn_relu.input: LayerOp("recurrent", act=0, weight=None),
    aten.embedding.default: LayerOp("embedding", act=None, weight=0),
    aten.embedding_bag.padding_idx: LayerOp("embedding", act=None, weight=0),
    aten.embedding_bag.default: LayerOp("embedding", act=None, weight=0),
}

# Module classes that hold a layer's parameters (as torch.export names them in nn_module_stack).
# coverage() adds a row for any of these that no layer op of the graph accounts for, so a
# layer type the table does not know yet is listed as float instead of going missing.
PARAMETRIC_MODULES: dict[str, str] = {
    "torch.nn.modules.linear.Linear": "linear",
    "torch.nn.modules.linear.NonDynamicallyQuantizableLinear": "linear",
    "torch.nn.modules.linear.Bilinear": "linear",
    "torch.nn.modules.conv.Conv1d": "conv",
    "torch.nn.modules.conv.Conv2d": "conv",
    "torch.nn.modules.conv.Conv3d": "conv",
    "torch.nn.modules.conv.ConvTranspose1d": "conv_transpose",
    "torch.nn.modules.conv.ConvTranspose2d": "conv_transpose",
    "torch.nn.modules.conv.ConvTranspose3d": "conv_transpose",
    "torch.nn.modules.rnn.LSTM": "recurrent",
    "torch.nn.modules.rnn.GRU": "recurrent",
    "torch.nn.modules.rnn.RNN": "recurrent",
    "torch.nn.modules.sparse.Embedding": "embedding",
    "torch.nn.modules.sparse.EmbeddingBag": "embedding",
    "torch.nn.modules.activation.MultiheadAttention": "attention",
}

# Clamp-like activations a GEMM, conv or add absorbs into its output range (XNNPACK and
# ONNX Runtime both fuse them), so they share the producer's output quantization.
FUSABLE_ACTIVATIONS = frozenset({
    aten.relu.default,
    aten.relu_.default,
    aten.hardtanh.default,
    aten.hardtanh_.default,
    aten.clamp.default,
})

# Ops whose output reuses the input's qparams: data movement and max/avg pooling. Quantized
# only inside an int8 region, so they never create a dequantize → quantize island of their own.
SHARED_QPARAM_OPS = frozenset({
    aten.max_pool1d.default,
    aten.max_pool2d.default,
    aten.avg_pool1d.default,
    aten.avg_pool2d.default,
    aten.adaptive_avg_pool1d.default,
    aten.adaptive_avg_pool2d.default,
    aten.reshape.default,
    aten.view.default,
    aten.permute.default,
    aten.transpose.int,
    aten.flatten.using_ints,
    aten.slice.Tensor,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.squeeze.default,
    aten.unsqueeze.default,
    aten.pad.default,
    aten.constant_pad_nd.default,
})
CAT_OPS = frozenset({aten.cat.default, aten.concat.default})
ELEMENTWISE_OPS = frozenset({aten.add.Tensor, aten.mul.Tensor})

# Ops that can consume an int8 tensor directly. A result that feeds none of them (a
# transformer residual into LayerNorm) would be dequantized at once: quantizing it only adds error.
INT8_INPUT_OPS = frozenset(
    {op for op, spec in LAYER_OPS.items() if spec.family in ("linear", "conv", "conv_transpose", "matmul")}
    | SHARED_QPARAM_OPS | CAT_OPS | ELEMENTWISE_OPS | FUSABLE_ACTIVATIONS
)


class Operands(NamedTuple):
    """A layer's operand nodes; unpacks as `act, weight, bias = layer_operands(node)`."""

    act: Node | None
    weight: Node | None
    bias: Node | None


def _arg(node: Node, index: int | None):
    if index is None or len(node.args) <= index:
        return None
    value = node.args[index]
    return value if isinstance(value, Node) else None


def layer_op(node: Node, target=None) -> LayerOp | None:
    """The table entry of a call_function node, or None when it is not a layer op.

    `target` overrides `node.target`: ExecuTorch's edge dialect wraps aten ops, and its
    backend passes the unwrapped overload (backends/compat/executorch.py `edge_target`).
    """
    if node.op != "call_function":
        return None
    return LAYER_OPS.get(node.target if target is None else target)


def layer_operands(node: Node, target=None) -> Operands:
    """The activation, weight and bias nodes of a layer node (None where absent)."""
    spec = layer_op(node, target)
    if spec is None:
        return Operands(None, None, None)
    return Operands(_arg(node, spec.act), _arg(node, spec.weight), _arg(node, spec.bias))


def weight_axis(node: Node, target=None) -> int:
    """Output-channel axis of the layer's weight (a transposed `convolution` uses axis 1)."""
    spec = layer_op(node, target)
    if spec is None:
        raise ValueError(f"{node.name} is not a layer op")
    op = node.target if target is None else target
    if op == aten.convolution.default and len(node.args) > 6 and node.args[6]:
        return 1
    return spec.weight_axis
