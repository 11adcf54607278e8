"""Assertions shared by the ExecuTorch backend tests."""

from __future__ import annotations

from pathlib import Path

import torch

from backends.compat.executorch import pte_structure
from pt2e_int8.qdq import is_dequantize, is_quantize


def output_step(qm: torch.fx.GraphModule) -> float:
    """The scale of the converted graph's final quantize op: one output quantization step.

    That is the output's own quantize when the output is dequantized, else the last one
    in graph order (a float residual add after the last quantized layer, for example).
    """
    out = next(n for n in qm.graph.nodes if n.op == "output").args[0]
    node = out[0] if isinstance(out, list | tuple) else out
    if is_dequantize(node) and is_quantize(node.args[0]):
        return float(node.args[0].args[1])
    last = [n for n in qm.graph.nodes if is_quantize(n)][-1]
    assert not isinstance(last.args[1], torch.fx.Node), "dynamic qparams: compare by SQNR instead"
    return float(last.args[1])


def pte_operators(path: Path) -> set[str]:
    """Operators the .pte runs outside delegates (read from the file itself)."""
    return set(pte_structure(Path(path).read_bytes())["operators"])


def pte_delegates(path: Path) -> list[str]:
    return pte_structure(Path(path).read_bytes())["delegates"]


def reference(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)
