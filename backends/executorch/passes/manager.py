"""Run an ordered list of passes; a failure names the pass that raised it."""

from __future__ import annotations

from collections.abc import Sequence

from torch.fx import GraphModule
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from pt2e_int8.errors import LoweringError


class PassManager:
    """Applies passes in order and records which ones changed the graph.

    Example:
        result = PassManager([FoldBiasDequantPass()]).run(gm)
        result.graph_module, result.modified
    """

    def __init__(self, passes: Sequence[PassBase]) -> None:
        self.passes = list(passes)
        self.fired: list[str] = []

    def run(self, gm: GraphModule) -> PassResult:
        modified = False
        for p in self.passes:
            name = type(p).__name__
            try:
                result = p.call(gm)
                gm.graph.lint()
            except Exception as e:
                raise LoweringError(f"lowering pass {name} failed: {type(e).__name__}: {e}") from e
            if result.modified:
                self.fired.append(name)
                gm = result.graph_module
                gm.recompile()
            modified |= result.modified
        return PassResult(gm, modified)
