"""The one home for the quantize / dequantize op sets (torchao defines them three times)."""

import torch
import torchao.quantization.pt2e  # noqa: F401  (registers torch.ops.quantized_decomposed)

_qd = torch.ops.quantized_decomposed

QUANTIZE_OPS = frozenset(
    {
        _qd.quantize_per_tensor.default,
        _qd.quantize_per_tensor.tensor,
        _qd.quantize_per_tensor.tensor2,
        _qd.quantize_per_channel.default,
    }
)
DEQUANTIZE_OPS = frozenset(
    {
        _qd.dequantize_per_tensor.default,
        _qd.dequantize_per_tensor.tensor,
        _qd.dequantize_per_tensor.tensor2,
        _qd.dequantize_per_channel.default,
    }
)
# Runtime-computed qparams: the mark of dynamic quantization.
CHOOSE_QPARAMS_OPS = frozenset(
    {_qd.choose_qparams.tensor, _qd.choose_qparams_symmetric.tensor}
)
PER_CHANNEL_OPS = frozenset(
    {_qd.quantize_per_channel.default, _qd.dequantize_per_channel.default}
)
QDQ_OPS = QUANTIZE_OPS | DEQUANTIZE_OPS | CHOOSE_QPARAMS_OPS


def is_dequantize(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and node.target in DEQUANTIZE_OPS


def is_quantize(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and node.target in QUANTIZE_OPS


def is_dynamic_dequantize(node: torch.fx.Node) -> bool:
    """A dequantize whose scale is computed at run time by choose_qparams (dynamic int8)."""
    scale = node.args[1] if len(node.args) > 1 else None
    return isinstance(scale, torch.fx.Node) and any(
        n.op == "call_function" and n.target in CHOOSE_QPARAMS_OPS for n in [scale, *scale.all_input_nodes]
    )
