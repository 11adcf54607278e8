"""Numerical parity measures shared by tests, backends and `compare`."""

from __future__ import annotations

import math

import torch


def sqnr(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical)."""
    ref = reference.detach().double()
    noise = (ref - approx.detach().double()).pow(2).mean().item()
    signal = ref.pow(2).mean().item()
    if noise == 0:
        return math.inf
    return -math.inf if signal == 0 else 10 * math.log10(signal / noise)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity over rows (last dim)."""
    a2, b2 = a.detach().double().reshape(-1, a.shape[-1]), b.detach().double().reshape(-1, b.shape[-1])
    return torch.nn.functional.cosine_similarity(a2, b2, dim=-1).mean().item()


def max_error_in_steps(reference: torch.Tensor, approx: torch.Tensor, step: float) -> float:
    """Largest absolute difference in units of the output's quantization step."""
    return (reference.detach().double() - approx.detach().double()).abs().max().item() / step


def flatten_outputs(out) -> list[torch.Tensor]:
    """A model's outputs (a tensor, or tuples / lists / dicts of them) as one flat list of tensors."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, tuple | list):
        return [t for o in out for t in flatten_outputs(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in flatten_outputs(o)]
    return []
