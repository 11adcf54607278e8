"""Run an ordered list of ONNX passes; a failure names the pass that raised it."""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from pt2e_int8.errors import LoweringError


def run_passes(model: ir.Model, passes: Sequence[ir.passes.PassBase]) -> list[str]:
    """Apply `passes` in order to `model` (in place). Returns the names of the passes that changed it."""
    changed = []
    for p in passes:
        name = type(p).__name__
        try:
            result = p(model)
        except Exception as e:
            raise LoweringError(f"ONNX pass {name} failed: {type(e).__name__}: {e}") from e
        if result.modified:
            changed.append(name)
    return changed
