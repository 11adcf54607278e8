"""Fake quantization in plain torch, to score candidate scales before any observer exists.

The outlier transforms choose their per-channel factors by the quantization error they would
leave. These functions model what the converted graph will compute for a `QuantConfig`:
activations per-tensor affine over their calibrated min/max (the minmax observer), weights
symmetric per output channel over `[weight_qmin, weight_qmax]`. Factors are powers of two, so
dividing a weight or a LayerNorm affine by them and multiplying back is exact in float.
"""

from __future__ import annotations

import torch

from pt2e_int8.config import SCALE_EPS, QuantConfig


def fake_quant_activation(x: torch.Tensor, cfg: QuantConfig, lo: float | None = None,
                          hi: float | None = None) -> torch.Tensor:
    """Per-tensor affine int8 over [lo, hi] (default: x's own min/max), as a minmax observer sets it."""
    info = torch.iinfo(cfg.act_dtype)
    lo = min(float(x.min()) if lo is None else lo, 0.0)
    hi = max(float(x.max()) if hi is None else hi, 0.0)
    scale = max((hi - lo) / (info.max - info.min), SCALE_EPS)
    zero = min(info.max, max(info.min, round(info.min - lo / scale)))
    return (torch.clamp(torch.round(x / scale) + zero, info.min, info.max) - zero) * scale


def fake_quant_weight(w: torch.Tensor, cfg: QuantConfig) -> torch.Tensor:
    """Symmetric int8 per output channel (dim 0), or per tensor when `cfg.per_channel` is off."""
    amax = w.abs().amax(1, keepdim=True) if cfg.per_channel else w.abs().amax()
    scale = (amax / cfg.weight_qmax).clamp(min=SCALE_EPS)
    return torch.clamp(torch.round(w / scale), cfg.weight_qmin, cfg.weight_qmax) * scale


def power_of_two(x: torch.Tensor) -> torch.Tensor:
    """The nearest power of two (in log scale) of each positive entry."""
    return torch.exp2(torch.round(torch.log2(x)))


# Rows of a calibration sample the searches run through: the error estimates are stable by then.
SEARCH_ROWS = 1024


def search_rows(samples: torch.Tensor) -> torch.Tensor:
    """At most SEARCH_ROWS rows of a sample, strided so that every calibration batch stays in."""
    return samples[:: max(1, -(-samples.shape[0] // SEARCH_ROWS))].float()


def relative_error(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """||approx - reference||² / ||reference||² (float32 sums: a ranking of candidates, not a report)."""
    signal = float(torch.linalg.vector_norm(reference)) ** 2
    return float(torch.linalg.vector_norm(approx - reference)) ** 2 / max(signal, 1e-30)
