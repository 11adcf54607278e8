"""How each observer's statistics combine across ranks: one reduce rule per observer kind.

A rule is a generator over one observer (or fake-quant) module. It yields what it needs
reduced, `("max" | "sum", tensors)`, receives the reduced tensors, writes them back, and
may ask again (a histogram needs the common range before it can re-bin). The driver in
`pt2e_int8.distributed` runs every rule of a model in lock-step, so a whole model syncs in
three all-reduces whatever its size. A rule's requests depend only on buffer shapes,
never on values, so every rank issues the same collectives.

| observer | rule | equal to one process over the union? |
|---|---|---|
| MinMax, PerChannelMinMax | min of minima, max of maxima | exactly |
| MovingAverage(PerChannel)MinMax | mean over ranks | the EMA is linear: mean of the ranks' EMAs = EMA of the per-step mean over ranks |
| Histogram | common range [min, max], each rank re-binned into it (mass spread uniformly within a bin), summed | within the re-binning (one source bin spread over ≤ 2 target bins) |
| PercentileObserver | mean of the per-batch percentiles, weighted by batches seen | exactly (up to float rounding) |
| FakeQuantize (incl. fused) | its observer's rule, then scale / zero point recomputed | as its observer |
| Placeholder, Derived (bias), Noop, ReuseInput, FixedQParams | nothing to reduce | – |
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import torch
from torch import nn
from torchao.quantization.pt2e import (
    DerivedObserverOrFakeQuantize,
    FakeQuantize,
    FixedQParamsObserver,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    NoopObserver,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
    ReuseInputObserver,
)

from pt2e_int8.errors import ConfigError
from pt2e_int8.observers import PercentileObserver

Request = tuple[str, tuple[torch.Tensor, ...]]
Rule = Callable[[nn.Module], Generator[Request, list[torch.Tensor], None]]
REDUCE_OPS = ("max", "sum")

REDUCERS: dict[type, Rule] = {}


def register_reducer(*classes: type) -> Callable[[Rule], Rule]:
    """Register `fn` as the reduce rule of `classes` (and their subclasses without a rule of their own)."""

    def register(fn: Rule) -> Rule:
        for cls in classes:
            if cls in REDUCERS:
                raise ValueError(f"{cls.__name__} already has a reduce rule: {REDUCERS[cls].__name__}")
            REDUCERS[cls] = fn
        return fn

    return register


def rule_for(module: nn.Module, name: str) -> Rule:
    """The most specific registered rule along the module's class hierarchy."""
    for cls in type(module).__mro__:
        if cls in REDUCERS:
            return REDUCERS[cls]
    raise ConfigError(
        f"No rule to combine {type(module).__name__} ({name}) across ranks. Register one with "
        f"pt2e_int8.observer_reduce.register_reducer({type(module).__name__}) before syncing."
    )


def _set(buffer: torch.Tensor, value: torch.Tensor) -> None:
    buffer.resize_(value.shape)
    buffer.copy_(value)


@register_reducer(MinMaxObserver, PerChannelMinMaxObserver)
def reduce_min_max(obs: nn.Module):
    """Min of the minima, max of the maxima: what one process over all ranks' data records."""
    neg_lo, hi = yield "max", (-obs.min_val, obs.max_val)
    obs.min_val.copy_(-neg_lo)
    obs.max_val.copy_(hi)


@register_reducer(MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver)
def reduce_moving_average(obs: nn.Module):
    """Mean over the ranks that observed anything (an unobserved per-tensor EMA is ±inf)."""
    seen = torch.isfinite(obs.min_val) & torch.isfinite(obs.max_val)
    zero = torch.zeros_like(obs.min_val)
    lo, hi, n = yield "sum", (torch.where(seen, obs.min_val, zero), torch.where(seen, obs.max_val, zero),
                              seen.to(obs.min_val.dtype))
    some = n > 0
    obs.min_val.copy_(torch.where(some, lo / n.clamp(min=1), obs.min_val))
    obs.max_val.copy_(torch.where(some, hi / n.clamp(min=1), obs.max_val))


@register_reducer(PercentileObserver)
def reduce_percentile(obs: PercentileObserver):
    """Batch-weighted mean of the per-batch percentiles: the observer's own mean over all batches."""
    n = obs.batches_seen.to(torch.float64)
    lo, hi, total = yield "sum", (obs.min_val * n if n else torch.zeros_like(obs.min_val),
                                  obs.max_val * n if n else torch.zeros_like(obs.max_val), n)
    if total > 0:
        obs.min_val.copy_(lo / total)
        obs.max_val.copy_(hi / total)
        obs.batches_seen.fill_(int(total.item()))


def rebin_histogram(hist: torch.Tensor, lo: float, hi: float, new_lo: float, new_hi: float) -> torch.Tensor:
    """Counts of `hist` over [lo, hi] re-binned into as many equal bins over [new_lo, new_hi] ⊇ [lo, hi].

    Each source bin's count is spread uniformly over its width (the histogram's own
    assumption), so the re-binned counts are the differences of the piecewise-linear
    cumulative count at the new edges. Total count is preserved.
    """
    bins = hist.numel()
    h = hist.to(torch.float64)
    if (lo, hi) == (new_lo, new_hi):
        return hist.clone()
    if hi <= lo or new_hi <= new_lo:  # a single value: all counts land in the bin holding it
        out = torch.zeros_like(h)
        width = (new_hi - new_lo) / bins
        index = min(bins - 1, max(0, int((lo - new_lo) / width))) if width > 0 else 0
        out[index] = h.sum()
        return out.to(hist.dtype)
    src = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    dst = torch.linspace(new_lo, new_hi, bins + 1, dtype=torch.float64)
    cum = torch.cat([h.new_zeros(1), h.cumsum(0)])
    i = (torch.searchsorted(src, dst, right=True) - 1).clamp(0, bins - 1)
    frac = ((dst - src[i]) / (src[i + 1] - src[i])).clamp(0.0, 1.0)
    return (cum[i] + frac * h[i]).diff().clamp(min=0).to(hist.dtype)


@register_reducer(HistogramObserver)
def reduce_histogram(obs: HistogramObserver):
    """Common range first, then every rank re-bins into it and the counts are summed."""
    neg_lo, hi = yield "max", (-obs.min_val, obs.max_val)
    new_lo, new_hi = -neg_lo, hi
    seen = bool(torch.isfinite(obs.min_val)) and bool(torch.isfinite(obs.max_val))
    local = (rebin_histogram(obs.histogram, obs.min_val.item(), obs.max_val.item(),
                             new_lo.item(), new_hi.item())
             if seen else torch.zeros_like(obs.histogram))
    (total,) = yield "sum", (local,)
    if torch.isfinite(new_lo) and torch.isfinite(new_hi):
        _set(obs.min_val, new_lo)
        _set(obs.max_val, new_hi)
        _set(obs.histogram, total)


def _observed(obs: nn.Module) -> bool:
    min_val = getattr(obs, "min_val", None)
    return isinstance(min_val, torch.Tensor) and min_val.numel() > 0 and bool(torch.isfinite(min_val).all())


@register_reducer(FakeQuantize)
def reduce_fake_quantize(fq: FakeQuantize):
    """The wrapped observer's rule, then scale and zero point from the reduced statistics:
    a frozen fake-quant trains with these, so every rank must hold the same ones."""
    observer = fq.activation_post_process
    yield from rule_for(observer, "activation_post_process")(observer)
    if _observed(observer):
        scale, zero_point = fq.calculate_qparams()
        _set(fq.scale, scale.to(fq.scale.device, fq.scale.dtype))
        _set(fq.zero_point, zero_point.to(fq.zero_point.device, fq.zero_point.dtype))


@register_reducer(PlaceholderObserver, DerivedObserverOrFakeQuantize, NoopObserver, ReuseInputObserver,
                  FixedQParamsObserver)
def reduce_nothing(obs: nn.Module):
    """Dynamic (per-batch), derived (bias from act × weight) or fixed qparams: no statistics."""
    return
    yield  # a generator that asks for nothing


def reduce_mean(*buffers: torch.Tensor, world_size: int):
    """Mean over ranks of plain buffers (batch-norm running statistics): EMAs, hence linear."""
    reduced = yield "sum", buffers
    for buffer, total in zip(buffers, reduced, strict=True):
        buffer.copy_(total / world_size)
