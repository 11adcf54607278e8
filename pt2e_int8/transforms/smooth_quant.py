"""SmoothQuant: move activation outliers of a linear's input channels into its weights.

    layer_norm(h, γ, β) → linear(·, W_q), linear(·, W_k), linear(·, W_v)
  ⇒ layer_norm(h, γ / s, β / s) → linear(·, W_q · s), linear(·, W_k · s), linear(·, W_v · s)

    linear(x, W_1, b_1) → linear(·, W_2)   ⇒   linear(x, W_1 / s[:, None], b_1 / s) → linear(·, W_2 · s)

    linear_v → heads → matmul(P, ·) → merge heads → linear_o   ⇒   linear_v(W_v / s[:, None], b_v / s) → … → linear_o(W_o · s)

Why: per-tensor int8 activations spend their whole grid on the few input channels that reach
far beyond the rest (LayerNorm outputs of transformers), while per-channel weights have room to
spare. Dividing input channel j by s_j = max|x_j|^α / max|w_j|^(1-α) and multiplying weight
column j by s_j leaves the product unchanged and balances the two (Xiao et al., SmoothQuant, 2023).
The division is folded into the op that produces the activation, so no op is added; s is a
power of two, so the fold is exact in float. α is searched per layer by the int8 error the layer
would have on the calibration rows, and a layer is only rewritten when that error drops.

The attention-output projection's input (the context, P · V with heads merged) has no op of its
own to absorb 1/s, but its channels are the value projection's output channels
(`channel_path.channel_source`), so that linear's rows take it.

Only where the producer feeds nothing but the smoothed linears: in a post-LN transformer (BERT,
MiniLM) the LayerNorm output is also the residual, so dividing it would need a multiply on the
residual path, an extra op; those layers are left alone (their outliers are the output rescaling's
and the range choice's job).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.fx import GraphModule, Node
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from pt2e_int8.calibration_stats import ActivationStats, ChannelStats
from pt2e_int8.config import QuantConfig
from pt2e_int8.decision import add_note
from pt2e_int8.transforms.channel_path import channel_source
from pt2e_int8.transforms.graph_edit import (
    constant,
    insert_float_multiply,
    replace_constant,
    sole_user_constant,
)
from pt2e_int8.transforms.quant_error import (
    fake_quant_activation,
    fake_quant_weight,
    power_of_two,
    relative_error,
    search_rows,
)

aten = torch.ops.aten

ALPHAS = tuple(round(0.05 * i, 2) for i in range(1, 20))
# A rewrite that does not lower the layer's int8 error by this fraction is not worth the change.
MIN_IMPROVEMENT = 0.05
_S_RANGE = (2.0**-16, 2.0**16)
KEEP_FLOAT_REASON = ("divides a linear's input channels by SmoothQuant factors; float, so the quantizer "
                     "after it sees the smoothed range")


@dataclass(frozen=True)
class Absorber:
    """How a producer op takes the division by s: which of its constants, along which axis."""

    constants: tuple[int, ...]  # positions in node.args of the constants divided by s
    row_axis: tuple[bool, ...]  # per constant: divide rows (a [out, in] weight) or the vector itself


# Producers that can absorb 1/s on their output channels (the registry of fold targets).
ABSORBERS: dict = {
    aten.layer_norm.default: Absorber(constants=(2, 3), row_axis=(False, False)),
    aten.linear.default: Absorber(constants=(1, 2), row_axis=(True, False)),
}


@dataclass(frozen=True)
class SmoothChoice:
    alpha: float | None  # None: no rewrite
    scales: torch.Tensor | None
    error: float
    base_error: float


def _group_error(x: torch.Tensor, weights: list[torch.Tensor], s: torch.Tensor | None, cfg: QuantConfig,
                 refs: list[torch.Tensor], source: torch.Tensor | None = None) -> float:
    xq = fake_quant_activation(x if s is None else x / s, cfg)
    total = 0.0
    for w, ref in zip(weights, refs, strict=True):
        wq = fake_quant_weight(w if s is None else w * s, cfg)
        total += relative_error(ref, xq @ wq.T)
    total /= len(weights)
    if source is not None:  # the absorbing op's own int8 output now carries the division too
        total += relative_error(source, fake_quant_activation(source if s is None else source / s, cfg)
                                * (1 if s is None else s))
    return total


def choose_smoothing(stats: ChannelStats, weights: list[torch.Tensor], cfg: QuantConfig,
                     alpha: float | None = None, source: ChannelStats | None = None) -> SmoothChoice:
    """Per-input-channel powers of two for an activation (`stats`) feeding `weights` [out_i, C].

    With `alpha` None, tries every α in ALPHAS and keeps the one with the lowest mean relative
    int8 error of the layers' outputs on the sampled rows; returns alpha None when no α beats
    leaving them alone by MIN_IMPROVEMENT. `source`: statistics of an int8 output that the
    division is folded into (the value projection, for the attention context); its own int8
    error under the division is added to the score.
    """
    x = search_rows(stats.samples)
    v = search_rows(source.samples) if source is not None else None
    weights = [w.detach().float() for w in weights]
    refs = [x @ w.T for w in weights]
    base = _group_error(x, weights, None, cfg, refs, v)
    amax_x = stats.absmax.clamp(min=1e-8)
    amax_w = torch.stack([w.abs().amax(0) for w in weights]).amax(0).clamp(min=1e-8)
    best = SmoothChoice(None, None, base, base)
    for a in ALPHAS if alpha is None else (alpha,):
        s = power_of_two((amax_x.pow(a) / amax_w.pow(1 - a)).clamp(*_S_RANGE))
        err = _group_error(x, weights, s, cfg, refs, v)
        if err < best.error:
            best = SmoothChoice(a, s, err, base)
    if best.alpha is not None and best.error > base * (1 - MIN_IMPROVEMENT):
        return SmoothChoice(None, None, base, base)
    return best


class SmoothActivationsPass(PassBase):
    """Migrates input-channel outliers of static linears into their weights.

    Fires on an activation read by `aten.linear` nodes (each with a constant weight of its own and
    a static `smooth=True` config) when the searched α lowers their int8 error, and either
    - its producer is in `ABSORBERS` (LayerNorm with affine constants, linear with a constant
      weight), or its channels come from such a linear through attention (`channel_source`: the
      value projection for the attention-output projection's input), and those linears are its
      only users: 1/s is folded into that op, no op added; or
    - the config has `smooth_insert=True`: a float `mul(x, 1/s)` is inserted before those linears
      (BERT's post-LN LayerNorm, whose output the residual add also reads; GELU outputs).
    Leaves alone: activations no op can absorb without `smooth_insert`, shared constants,
    non-static or non-smooth scopes, layers without statistics, and layers α cannot improve.
    """

    def __init__(self, stats: ActivationStats, config_of: Callable[[Node], QuantConfig | None]) -> None:
        super().__init__()
        self.stats, self.config_of = stats, config_of

    def call(self, gm: GraphModule) -> PassResult:
        producers = []
        for node in gm.graph.nodes:
            if node.op == "call_function" and node.target == aten.linear.default and isinstance(node.args[0], Node):
                if node.args[0] not in producers:
                    producers.append(node.args[0])
        modified = False
        for producer in producers:
            modified |= self._smooth(gm, producer)
        return PassResult(gm, modified)

    def _smoothable(self, gm: GraphModule, producer: Node) -> list[Node]:
        """The users of `producer` that can take s into their weight columns."""
        found = []
        for u in producer.users:
            if u.op != "call_function" or u.target != aten.linear.default or u.args[0] is not producer:
                continue
            if producer in u.args[1:] or not sole_user_constant(gm, u.args[1], u):
                continue
            cfg = self.config_of(u)
            if cfg is not None and cfg.smooth and cfg.mode == "static":
                found.append(u)
        return found

    def _absorbable(self, gm: GraphModule, producer: Node,
                    consumers: list[Node]) -> tuple[Node, list[tuple[Node, bool]]] | None:
        """(the op that takes 1/s, its constants to divide) when one can, else None: the producer
        itself, or the linear whose output channels reach it through attention (channel_path)."""
        if set(producer.users) != set(consumers):
            return None
        absorber = producer
        if producer.op != "call_function" or producer.target not in ABSORBERS:
            absorber = channel_source(producer)
            if absorber is None:
                return None
        spec = ABSORBERS[absorber.target]
        found = []
        for pos, rows in zip(spec.constants, spec.row_axis, strict=True):
            arg = absorber.args[pos] if len(absorber.args) > pos else None
            if arg is None and pos != spec.constants[0]:
                continue  # no bias: nothing to divide there
            if not sole_user_constant(gm, arg, absorber):
                return None
            found.append((arg, rows))
        return absorber, found

    def _smooth(self, gm: GraphModule, producer: Node) -> bool:
        consumers = self._smoothable(gm, producer)
        stats = self.stats.of(producer)
        if not consumers or stats is None:
            return False
        cfg = self.config_of(consumers[0])
        absorb = self._absorbable(gm, producer, consumers)
        if absorb is None and not cfg.smooth_insert:
            return False
        weights = [constant(gm, u.args[1]) for u in consumers]
        source = None
        if absorb is not None and absorb[0] is not producer:  # folded through attention: V's own error counts
            source = self.stats.of(absorb[0])
            if source is None:  # no statistics of V's output to score the fold with
                if not cfg.smooth_insert:
                    return False
                absorb = None
        choice = choose_smoothing(stats, weights, cfg, cfg.smooth_alpha, source)
        if choice.alpha is None:
            return False
        s = choice.scales
        if absorb is not None:
            absorber, constants = absorb
            for arg, rows in constants:
                value = constant(gm, arg)
                replace_constant(gm, arg, value / (s.to(value.dtype)[:, None] if rows else s.to(value.dtype)))
            where = f"1/s folded into {absorber.name}"
        else:
            self._insert_division(gm, producer, consumers, s)
            where = "1/s a float multiply before it"
        for u, w in zip(consumers, weights, strict=True):
            replace_constant(gm, u.args[1], w * s.to(w.dtype))
            add_note(u, f"smoothed (SmoothQuant alpha={choice.alpha:.2f}, {where}; "
                        f"int8 error {choice.base_error:.2e} -> {choice.error:.2e})")
        return True

    @staticmethod
    def _insert_division(gm: GraphModule, producer: Node, consumers: list[Node], s: torch.Tensor) -> None:
        first = min(consumers, key=lambda n: list(gm.graph.nodes).index(n))
        insert_float_multiply(gm, producer, consumers, (1.0 / s).to(torch.float32), "_smooth_inverse",
                              KEEP_FLOAT_REASON, scope=first)
