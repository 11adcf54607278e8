"""Rescale the few huge output channels of a linear whose output is only consumed in float.

    linear(x, W, b) → add(residual, ·) → layer_norm
  ⇒ linear(x, W / r[:, None], b / r) → mul(·, r) → add(residual, ·) → layer_norm

Why: a static int8 linear must produce an int8 output (XNNPACK's qs8 fully-connected and ONNX
Runtime's QGemm both requantize at their output), with one scale for the whole tensor. In
all-MiniLM-L6-v2 the FFN down-projection writes ≈190 into channel 99 of the [CLS] token in
every sentence while every other value stays within ±5, so the per-tensor step is 0.77 and
typical outputs keep a handful of levels; this alone takes the static model from cosine 0.999
to 0.955. SmoothQuant cannot help: the outlier is in the output, not the input. Dividing
those channels by a power of two `r` shrinks the range the output quantizer must cover, and the
float `mul` that follows restores the values exactly (powers of two commute with rounding).
The cost is one elementwise multiply where the output is dequantized anyway.

Fires only where the output stays in float after the linear (a residual add into LayerNorm,
GELU, the graph output), also behind data movement such as BERT's eval-mode dropout: if an int8
op consumed it, the `mul` would add a requantization.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.fx import GraphModule, Node
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from pt2e_int8.annotators.framework import feeds_int8, fused_activation, int8_readers
from pt2e_int8.calibration_stats import ActivationStats, ChannelStats
from pt2e_int8.config import QuantConfig
from pt2e_int8.decision import add_note
from pt2e_int8.ops import ELEMENTWISE_OPS
from pt2e_int8.transforms.graph_edit import (
    constant,
    insert_float_multiply,
    replace_constant,
    sole_user_constant,
)
from pt2e_int8.transforms.quant_error import fake_quant_activation, relative_error, search_rows

aten = torch.ops.aten

# Targets tried for the largest channel range, as multiples of the median channel's max |y|.
_TARGET_MULTIPLES = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
# Rescaling adds an op: it must at least halve the output's quantization error to be worth it.
MIN_GAIN = 2.0

KEEP_FLOAT_REASON = "restores channels a linear's output was rescaled by; stays float so the range stays small"


def output_stays_float(node: Node) -> bool:
    """Whether every reader of `node`'s result works in float once the annotators are done.

    The walk follows the annotators' own rules (annotators.framework.feeds_int8), so the two
    cannot drift apart: data movement (an eval-mode dropout, view, permute) passes int8 on, so
    its readers decide; an add/sub/mul is quantized only when its result reaches an int8
    consumer or the model output (the transformer residual into LayerNorm does not); any other
    int8-capable reader (a linear, an attention matmul, cat) takes int8.
    """
    return all(reader.op == "output"  # read after the dequantize
               or (reader.target in ELEMENTWISE_OPS and not feeds_int8(fused_activation(reader) or reader))
               for reader in int8_readers(node))


def choose_output_factors(stats: ChannelStats, cfg: QuantConfig) -> tuple[torch.Tensor, float, float]:
    """Per-channel powers of two `r` (1 for most channels) for a linear's output.

    Returns (r, error with r, error without): the int8 error of the output rows sampled in
    `stats`, relative to their float values, with the per-tensor range over every calibration
    row (as a minmax observer would set it). Channel c gets the power of two that brings its
    max |y_c| under a target, searched among multiples of the median channel's range.
    """
    amax = stats.absmax.clamp(min=1e-12)
    lo, hi = float(stats.min.min()), float(stats.max.max())
    y = search_rows(stats.samples)
    base = relative_error(y, fake_quant_activation(y, cfg, lo, hi))
    best_r, best = torch.ones_like(amax), base
    median = float(amax.median())
    for k in _TARGET_MULTIPLES:
        r = torch.exp2(torch.ceil(torch.log2(amax / (k * median)))).clamp(min=1.0)
        if bool((r == 1).all()):
            continue
        scaled_lo, scaled_hi = float((stats.min / r).min()), float((stats.max / r).max())
        err = relative_error(y, fake_quant_activation(y / r, cfg, scaled_lo, scaled_hi) * r)
        if err < best:
            best_r, best = r, err
    return best_r, best, base


class RescaleOutputChannelsPass(PassBase):
    """Divides a static linear's outlier output channels by powers of two and multiplies them back in float.

    Fires on `aten.linear` with a constant weight (and bias) read by it alone, whose resolved config
    has `smooth=True` and static activations, whose output only feeds float ops, and whose output
    quantization error on the calibration rows at least halves (`MIN_GAIN`).
    Leaves alone: linears feeding int8 consumers (another linear, attention matmuls through
    view/permute), shared or non-constant weights, layers without statistics, outputs without
    outlier channels, and scopes whose config does not ask for it.
    """

    def __init__(self, stats: ActivationStats, config_of: Callable[[Node], QuantConfig | None]) -> None:
        super().__init__()
        self.stats, self.config_of = stats, config_of

    def call(self, gm: GraphModule) -> PassResult:
        modified = False
        for node in list(gm.graph.nodes):
            if node.op == "call_function" and node.target == aten.linear.default:
                modified |= self._rescale(gm, node)
        return PassResult(gm, modified)

    def _rescale(self, gm: GraphModule, node: Node) -> bool:
        cfg = self.config_of(node)
        if cfg is None or not cfg.smooth or cfg.mode != "static":
            return False
        weight_node = node.args[1]
        bias_node = node.args[2] if len(node.args) > 2 else None
        weight = constant(gm, weight_node)
        if weight is None or weight.dim() != 2 or not sole_user_constant(gm, weight_node, node):
            return False
        if bias_node is not None and not sole_user_constant(gm, bias_node, node):
            return False
        stats = self.stats.of(node)
        if stats is None or not output_stays_float(node):
            return False
        r, err, base = choose_output_factors(stats, cfg)
        if bool((r == 1).all()) or err * MIN_GAIN > base:
            return False

        replace_constant(gm, weight_node, weight / r.to(weight.dtype)[:, None])
        if bias_node is not None:
            bias = constant(gm, bias_node)
            replace_constant(gm, bias_node, bias / r.to(bias.dtype))
        insert_float_multiply(gm, node, list(node.users), r.to(weight.dtype), "_rescale_factor", KEEP_FLOAT_REASON,
                              scope=node)
        channels = int((r > 1).sum())
        add_note(node, f"output rescaled: {channels} channel{'s' if channels > 1 else ''} "
                       f"/{int(r.max())} (quant error {base:.2e} -> {err:.2e})")
        return True
