"""Numerical parity of artifact outputs against a reference: max abs error, error in steps, SQNR.

The step of an output is the scale of the quantize op that produced it in a converted graph
(`... -> quantize -> dequantize -> output`): an int8 kernel that rounds differently is off by
one step, so "steps" is the scale-free measure of whether an artifact is right.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from pt2e_int8.numerics import max_error_in_steps, sqnr

# Ops that pass a dequantized value through unchanged in value (shape only), so the
# quantize before them still gives the output's step.
_PASS_THROUGH = {"view", "reshape", "_unsafe_view", "flatten", "squeeze", "unsqueeze", "permute",
                 "transpose", "clone", "contiguous", "alias", "expand", "t", "getitem"}


def _op_name(node) -> str:
    target = node.target
    name = getattr(target, "__name__", str(target))
    return name.split(".")[0]


def output_steps(gm) -> list[float | None]:
    """Per graph output: the scale of its final per-tensor dequantize, or None (float output, n/a)."""
    from pt2e_int8.qdq import is_dequantize

    graph = getattr(gm, "graph", None)
    if graph is None:
        return []
    out_node = next(n for n in reversed(graph.nodes) if n.op == "output")
    outs = out_node.args[0]
    outs = list(outs) if isinstance(outs, tuple | list) else [outs]
    steps: list[float | None] = []
    for node in outs:
        step = None
        while isinstance(node, torch.fx.Node):
            if is_dequantize(node):
                scale = node.args[1]
                step = float(scale) if isinstance(scale, int | float) else None
                break
            if node.op != "call_function" or _op_name(node) not in _PASS_THROUGH:
                break
            node = node.args[0]
        steps.append(step)
    return steps


@dataclass
class OutputParity:
    output: int
    shape: list[int]
    max_abs_error: float
    step: float | None  # the reference's output quantization step; None: not a quantized output
    max_error_steps: float | None
    sqnr_db: float

    def to_dict(self) -> dict:
        d = asdict(self)
        # JSON has no inf: an exact match is reported as null SQNR with max error 0.
        if not math.isfinite(d["sqnr_db"]):
            d["sqnr_db"] = None if d["sqnr_db"] > 0 else d["sqnr_db"]
        return d


def compare_outputs(reference: list[list[torch.Tensor]], candidate: list[list[torch.Tensor]],
                    steps: list[float | None]) -> list[OutputParity]:
    """Per output, over all batches (outputs concatenated along dim 0).

    Args:
        reference: per batch, the reference outputs.
        candidate: per batch, the artifact outputs, same structure.
        steps: per output, its quantization step or None.
    """
    n_out = len(reference[0])
    if any(len(c) != n_out for c in candidate):
        raise ValueError(f"the artifact returns {len(candidate[0])} outputs, the reference {n_out}")
    rows = []
    for i in range(n_out):
        ref = torch.cat([b[i].detach().float().reshape(-1) for b in reference])
        got = torch.cat([b[i].detach().float().reshape(-1) for b in candidate])
        if ref.shape != got.shape:
            raise ValueError(f"output {i}: artifact shape {tuple(candidate[0][i].shape)} vs reference "
                             f"{tuple(reference[0][i].shape)}")
        step = steps[i] if i < len(steps) else None
        err = (ref - got).abs().max().item() if ref.numel() else 0.0
        rows.append(OutputParity(i, list(reference[0][i].shape), err, step,
                                 max_error_in_steps(ref, got, step) if step else None, sqnr(ref, got)))
    return rows


def kernel_reference_outputs(backend, module, batches: list[tuple]) -> list[list[torch.Tensor]] | None:
    """`module`'s outputs on each batch as `backend`'s runtime computes them (`Backend.reference`:
    exact int32 accumulation, its rounding, its float kernels where they decide ties); None when
    that reference cannot be built or run (a graph its rewrite does not understand), so the caller
    measures against the plain converted graph. The plain graph sums in fp32, and near a rounding
    tie that is one output step that a transformer grows layer by layer (bench/issue11/steps)."""
    from pt2e_int8.app.modelspec import run_model

    try:
        kernel_module = backend.reference(module)
        return [run_model(kernel_module, b, what="the integer reference", fix="") for b in batches]
    except Exception:  # noqa: BLE001  (any failure: fall back to the plain reference, which ran)
        return None


def format_parity(rows: list[OutputParity]) -> str:
    parts = []
    for r in rows:
        steps = f"{r.max_error_steps:.2f} steps" if r.max_error_steps is not None else "steps n/a"
        db = "exact" if math.isinf(r.sqnr_db) and r.sqnr_db > 0 else f"SQNR {r.sqnr_db:.1f} dB"
        parts.append(f"out{r.output}: max|err| {r.max_abs_error:.3g}, {steps}, {db}")
    return "; ".join(parts)
