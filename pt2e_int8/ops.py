"""The op table: which aten ops are layers, where their operands sit, and which ops carry int8.

Every package reads these facts from here: the annotators (what to quantize and on which
weight axis), `coverage()` (which nodes are layer rows), the backends' passes and placement
(which node is the layer, which argument is its weight). Adding a layer op is one entry in
`LAYER_OPS` plus, if it is to be quantized, one annotator (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Callable
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
    # padding="same" / "valid" convs keep their string padding in this overload
    aten.conv1d.padding: LayerOp("conv", act=0, weight=1, bias=2),
    aten.conv2d.padding: LayerOp("conv", act=0, weight=1, bias=2),
    aten.conv3d.padding: LayerOp("conv", act=0, weight=1, bias=2),
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

# -- non-layer ops that carry int8 ------------------------------------------------------
# What XNNPACK (the ExecuTorch 1.5.1 partitioner, partition/config/*.py) runs in qs8 besides
# the layers, with the constraints it checks on each. The annotators quantize these ops only
# inside an int8 region, and never a node the backend would leave outside its delegate: a
# quantize/dequantize pair there is a float round trip that a plain runtime cannot even load.
# Not here: sigmoid, tanh, hardswish, leaky_relu, elu, softmax, gelu. Their partitioner configs
# are FP32-only (EluConfig is not even registered), so XNNPACK runs them as dq → f32 → q;
# between int8 neighbours they get that anyway from the neighbours' own quantization.


def _ints(value, n: int) -> list[int]:
    values = list(value) if isinstance(value, list | tuple) else [value]
    return values * n if len(values) == 1 else values


def _pool_args(node: Node, defaults: tuple) -> list:
    """A pooling node's arguments after the input, with the schema's defaults filled in."""
    return list(node.args[1:]) + list(defaults[len(node.args) - 1:])


def _max_pool_limit(node: Node) -> str | None:
    kernel, stride, _, _, _ = _pool_args(node, ((), (), 0, 1, False))
    kernel = _ints(kernel, 2)
    stride = _ints(stride, 2) if stride not in ((), []) else kernel
    if any(s > k for s, k in zip(stride, kernel, strict=False)):
        return f"XNNPACK max-pool needs stride <= kernel (stride {stride}, kernel {kernel})"
    return None


def _avg_pool_limit(node: Node) -> str | None:
    if node.target != aten.avg_pool2d.default:
        return None  # avg_pool1d is decomposed; XNNPACK pools 2-D only
    _, _, padding, ceil_mode, include_pad, divisor = _pool_args(node, ((), (), 0, False, True, None))
    if ceil_mode:
        return "XNNPACK average pooling has no ceil mode"
    if include_pad and any(_ints(padding, 2)):
        return "XNNPACK average pooling cannot count zero padding (count_include_pad=True)"
    if divisor is not None:
        return "XNNPACK average pooling has no divisor override"
    return None


def _mean_limit(node: Node) -> str | None:
    val = node.args[0].meta.get("val") if isinstance(node.args[0], Node) else None
    rank = val.dim() if isinstance(val, torch.Tensor) else None
    dims = sorted(d % rank for d in node.args[1]) if rank and isinstance(node.args[1], list | tuple) else None
    keepdim = len(node.args) > 2 and bool(node.args[2])
    if rank != 4 or dims != [2, 3] or not keepdim or node.kwargs.get("dtype") is not None:
        return "XNNPACK runs mean in int8 only over H and W of a 4-D tensor with keepdim=True"
    return None


def _pad_limit(node: Node) -> str | None:
    pads = node.args[1] if len(node.args) > 1 else []
    if any(p < 0 for p in pads):
        return "XNNPACK has no negative (cropping) padding"
    mode = node.args[2] if node.target == aten.pad.default and len(node.args) > 2 else "constant"
    return None if mode == "constant" else f"XNNPACK pads with a constant only (mode={mode!r})"


def _slice_limit(node: Node) -> str | None:
    step = node.args[4] if len(node.args) > 4 else 1
    return None if step == 1 else f"XNNPACK slices with step 1 only (step {step})"


def _unsqueeze_limit(node: Node) -> str | None:
    val = node.args[0].meta.get("val") if isinstance(node.args[0], Node) else None
    rank = val.dim() if isinstance(val, torch.Tensor) else None
    dim = node.args[1]
    return None if dim in (-1, rank) else "XNNPACK unsqueezes the trailing dimension only"


def _alpha_limit(node: Node) -> str | None:
    alpha = node.kwargs.get("alpha", 1)
    return None if alpha == 1 else f"XNNPACK add/sub has no alpha (alpha={alpha})"


@dataclass(frozen=True)
class Int8Op:
    """A non-layer op that can run on int8 tensors, and what its int8 kernel needs."""

    # shared: the output reuses the input's qparams (data movement, pooling, clamp-like
    #   activations: XNNPACK's qs8 kernels for these require equal input/output qparams);
    # cat: every input and the output share one set of qparams;
    # elementwise: two data inputs and its own output qparams (add, sub, mul).
    family: str
    # Why the backend cannot run this node in int8 (None when it can); read at annotation.
    limit: Callable[[Node], str | None] | None = None


_SHARED = Int8Op("shared")
INT8_OPS: dict[torch._ops.OpOverload, Int8Op] = {
    # data movement: any dtype is a copy
    **dict.fromkeys((
        aten.reshape.default, aten.view.default, aten.view_copy.default, aten.flatten.using_ints,
        aten.permute.default, aten.permute_copy.default, aten.transpose.int, aten.clone.default,
        aten.dropout.default,  # eval-mode export keeps dropout(train=False): an identity
    ), _SHARED),
    # (squeeze has no XNNPACK config: it runs outside the delegate, so it is never quantized)
    aten.unsqueeze.default: Int8Op("shared", _unsqueeze_limit),
    aten.unsqueeze_copy.default: Int8Op("shared", _unsqueeze_limit),
    aten.slice.Tensor: Int8Op("shared", _slice_limit),
    aten.slice_copy.Tensor: Int8Op("shared", _slice_limit),
    aten.pad.default: Int8Op("shared", _pad_limit),
    aten.constant_pad_nd.default: Int8Op("shared", _pad_limit),
    # pooling and resizing: outputs lie within the input's range
    aten.max_pool2d.default: Int8Op("shared", _max_pool_limit),
    aten.max_pool1d.default: _SHARED,
    aten.avg_pool1d.default: _SHARED,
    aten.avg_pool2d.default: Int8Op("shared", _avg_pool_limit),
    aten.adaptive_avg_pool1d.default: _SHARED,
    aten.adaptive_avg_pool2d.default: _SHARED,
    aten.mean.dim: Int8Op("shared", _mean_limit),
    aten.upsample_bilinear2d.vec: _SHARED,
    # clamp-like activations standing alone (after a layer they are fused instead)
    **dict.fromkeys((
        aten.relu.default, aten.relu_.default, aten.relu6.default, aten.hardtanh.default,
        aten.hardtanh_.default, aten.clamp.default,
    ), _SHARED),
    aten.cat.default: Int8Op("cat"),
    aten.concat.default: Int8Op("cat"),
    # (the in-place forms are what `y += x` exports to, as in torchvision's ResNet blocks)
    **dict.fromkeys((aten.add.Tensor, aten.add_.Tensor, aten.sub.Tensor, aten.sub_.Tensor),
                    Int8Op("elementwise", _alpha_limit)),
    **dict.fromkeys((aten.mul.Tensor, aten.mul_.Tensor), Int8Op("elementwise")),
}
SHARED_QPARAM_OPS = frozenset(op for op, spec in INT8_OPS.items() if spec.family == "shared")
# Shared-qparam ops that compute (pool, mean, resize) rather than move data: worth quantizing after
# a float producer when their result feeds an int8 layer.
REDUCING_OPS = frozenset({
    aten.max_pool2d.default, aten.max_pool1d.default, aten.avg_pool1d.default, aten.avg_pool2d.default,
    aten.adaptive_avg_pool1d.default, aten.adaptive_avg_pool2d.default, aten.mean.dim,
    aten.upsample_bilinear2d.vec,
})
CAT_OPS = frozenset(op for op, spec in INT8_OPS.items() if spec.family == "cat")
ELEMENTWISE_OPS = frozenset(op for op, spec in INT8_OPS.items() if spec.family == "elementwise")

# The clamp-like activations each producer's int8 kernel absorbs into its output range, so
# they share the producer's output quantization (XNNPACK's GEMM/conv configs fuse relu and
# hardtanh, its add fuses relu; ONNX Runtime fuses Relu/Clip the same way). A scalar clamp is
# rewritten as hardtanh before annotation (transforms/clamp_to_hardtanh.py); a one-sided one
# stays a standalone int8 clamp.
_GEMM_ACTIVATIONS = frozenset({
    aten.relu.default, aten.relu_.default, aten.relu6.default, aten.hardtanh.default,
    aten.hardtanh_.default,
})
FUSED_ACTIVATIONS: dict[torch._ops.OpOverload, frozenset] = {
    **{op: _GEMM_ACTIVATIONS for op, spec in LAYER_OPS.items()
       if spec.family in ("linear", "conv", "conv_transpose", "matmul")},
    **dict.fromkeys((aten.add.Tensor, aten.add_.Tensor), frozenset({aten.relu.default, aten.relu_.default})),
}


def int8_limit(node: Node) -> str | None:
    """Why the backend cannot run this int8-capable op node in int8, or None when it can."""
    spec = INT8_OPS.get(node.target)
    return spec.limit(node) if spec is not None and spec.limit is not None else None


# Ops that can consume an int8 tensor directly. A result that feeds none of them (a
# transformer residual into LayerNorm) would be dequantized at once: quantizing it only adds error.
INT8_INPUT_OPS = frozenset(
    {op for op, spec in LAYER_OPS.items() if spec.family in ("linear", "conv", "conv_transpose", "matmul")}
    | set(INT8_OPS)
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
