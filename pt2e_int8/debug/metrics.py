"""Ready-made metrics for sensitivity and auto_quantize: how close a model's outputs stay to float.

A metric is any `fn(model) -> float` where higher is better (accuracy, cosine, -loss). These
compare the candidate's outputs with the float model's on fixed inputs, which needs no labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from pt2e_int8.capture import as_input_tuple
from pt2e_int8.numerics import cosine, sqnr

Metric = Callable[[torch.nn.Module], float]


def _flatten(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, tuple | list):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flatten(o)]
    return []


def _eval_mode(model: torch.nn.Module) -> torch.nn.Module:
    # An exported GraphModule is fixed in the mode it was exported in and refuses .eval().
    return model if isinstance(model, torch.fx.GraphModule) else model.eval()


def _outputs(model: torch.nn.Module, batches: list[tuple]) -> list[torch.Tensor]:
    """Each output of the model, concatenated over batches along dim 0."""
    with torch.no_grad():
        per_batch = [[t.detach().float() for t in _flatten(model(*b))] for b in batches]
    return [torch.cat([b[i] for b in per_batch]) for i in range(len(per_batch[0]))]


def output_cosine(float_model: torch.nn.Module, inputs: Iterable) -> Metric:
    """Mean cosine similarity (over rows, then outputs) of a model's outputs to the float model's.

    Example:
        metric = output_cosine(model, [(ids, mask)])
        metric(qm)   # 0.9973
    """
    batches = [as_input_tuple(b) for b in inputs]
    reference = _outputs(_eval_mode(float_model), batches)

    def metric(model: torch.nn.Module) -> float:
        got = _outputs(model, batches)
        return sum(cosine(r, g) for r, g in zip(reference, got, strict=True)) / len(reference)

    metric.__name__ = "cosine"
    return metric


def output_sqnr(float_model: torch.nn.Module, inputs: Iterable) -> Metric:
    """Lowest SQNR in dB over the model's outputs against the float model's."""
    batches = [as_input_tuple(b) for b in inputs]
    reference = _outputs(_eval_mode(float_model), batches)

    def metric(model: torch.nn.Module) -> float:
        got = _outputs(model, batches)
        return min(sqnr(r, g) for r, g in zip(reference, got, strict=True))

    metric.__name__ = "sqnr"
    return metric


METRICS = {"cosine": output_cosine, "sqnr": output_sqnr}
