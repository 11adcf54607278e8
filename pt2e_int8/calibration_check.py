"""Calibration data that makes int8 useless, found from the observers before convert.

torchao turns whatever range an observer saw into qparams without a word. Three kinds of range
ruin the layers that read the activation, measured on a Linear(16,32)-ReLU-Linear(32,4) (int8
output vs float, SQNR on held-out inputs): all-zero data 1.3 dB, a constant 3.0 dB, 1e20 0 dB.

- non-finite, or so wide that (max - min) / 255 overflows float32: the scale is inf or NaN and
  no value survives. Refused (CalibrationError).
- constant (min == max, all-zero data included): int8 can represent that one value, and every
  other input saturates. Warned about: a constant input (a padding mask) can be real.
- huge (|value| > 1e10): each int8 step is > 1e8 wide, so data of ordinary magnitude rounds to
  a single step. Warned about: unnormalized features can be this large.

The warnings name the layers that read each bad activation.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch.fx import GraphModule, Node

from pt2e_int8.decision import decision_of
from pt2e_int8.errors import CalibrationError
from pt2e_int8.quantizer import module_stack

HUGE = 1e10


def _node_label(node: Node) -> str:
    stack = module_stack(node)
    return stack[-1][0] if stack and stack[-1][0] else node.name


def _readers(observer_node: Node) -> str:
    """The layers that read the observed activation, or what produced it when no layer does."""
    layers = sorted({_node_label(u) for u in observer_node.users if decision_of(u) is not None})
    if layers:
        return "the input of " + ", ".join(layers)
    source = observer_node.args[0] if observer_node.args else None
    return f"the output of {_node_label(source)}" if isinstance(source, Node) else observer_node.name


def _observed(module) -> tuple[torch.Tensor, torch.Tensor] | None:
    observer = getattr(module, "activation_post_process", module)  # fake-quant wraps its observer
    lo, hi = getattr(observer, "min_val", None), getattr(observer, "max_val", None)
    if not (isinstance(lo, torch.Tensor) and isinstance(hi, torch.Tensor)) or lo.numel() == 0:
        return None
    if getattr(observer, "ch_axis", -1) not in (-1, None) and lo.numel() > 1:
        return None  # a per-channel weight observer: weights are not calibration data
    if torch.isinf(lo).all() and torch.isinf(hi).all() and (lo > hi).all():
        return None  # never ran: workflow marks those layers unobserved
    return lo.detach().float(), hi.detach().float()


def check_observed_ranges(prepared: GraphModule) -> list[str]:
    """Refuse non-finite ranges, warn about constant and huge ones. Returns the warnings given.

    Raises:
        CalibrationError: some activation's range is non-finite or its scale overflows, naming where.
    """
    broken, constant, huge = [], [], []
    for node in prepared.graph.nodes:
        if node.op != "call_module" or (node.args and getattr(node.args[0], "op", None) == "get_attr"):
            continue  # weights are not calibration data
        seen = _observed(prepared.get_submodule(node.target))
        if seen is None:
            continue
        lo, hi = seen
        where = _readers(node)
        if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()) or not math.isfinite(
                (hi.max() - lo.min()).item() / 255):
            broken.append(f"{where} (range [{lo.min().item():.3g}, {hi.max().item():.3g}])")
        elif torch.equal(lo, hi):
            constant.append(f"{where} (always {lo.flatten()[0].item():.4g})")
        elif max(abs(lo.min().item()), abs(hi.max().item())) > HUGE:
            huge.append(f"{where} (range [{lo.min().item():.3g}, {hi.max().item():.3g}])")
    if broken:
        raise CalibrationError(
            f"Calibration produced activations with no finite int8 scale at {'; '.join(broken[:8])}: the float model "
            "overflows on this data or it holds values near the float32 limit. Calibrate on representative, "
            "normalized samples."
        )
    messages = []
    if constant:
        messages.append(
            f"calibration saw a single value at {'; '.join(constant[:8])}: int8 can represent only that value "
            "there, so any other input saturates. Calibrate on varied, representative samples (all-zero or "
            "constant data gives an int8 model far from float).")
    if huge:
        messages.append(
            f"calibration saw values beyond {HUGE:.0e} at {'; '.join(huge[:8])}: each int8 step there is wider than "
            f"{HUGE / 255:.0e}, so inputs of ordinary size all round to one step. Check the data's units or "
            "normalization.")
    for text in messages:
        warnings.warn(text, stacklevel=3)
    return messages
