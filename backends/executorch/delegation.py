"""How a lowered program is split: delegate calls, and the ops left outside every delegate, with why.

Read from the lowered edge program itself. Each `executorch_call_delegate` is one call into
XNNPACK (each call hands tensors across the runtime boundary, so fewer is faster); every other
node that produces a tensor runs on ExecuTorch's portable kernels, outside XNNPACK. The reason
for each is the partitioner's own (`WhyNoPartition`, collected by `rejections.py`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from backends.compat.executorch import edge_target

_DELEGATE_CALL = "executorch_call_delegate"
NO_CONFIG = "no XNNPACK partitioner config takes this op"


@dataclass(frozen=True)
class OutsideOp:
    """One op the program runs outside XNNPACK."""

    node: str
    op: str  # aten overload name, e.g. aten.max_pool2d_with_indices.default
    reason: str  # the partitioner's words, or NO_CONFIG

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Partitioning:
    delegate_calls: int
    outside: tuple[OutsideOp, ...]

    @property
    def clean(self) -> bool:
        """Everything in one XNNPACK call: nothing a different lowering could improve on."""
        return not self.outside and self.delegate_calls <= 1

    def cost(self) -> tuple[int, int]:
        """Lower is better: ops on portable kernels first, then delegate calls."""
        return len(self.outside), self.delegate_calls

    def describe(self) -> str:
        """'5 delegate calls, 4 ops outside XNNPACK (max_pool2d_with_indices: ceil mode is not ...)'."""
        why = dict.fromkeys(f"{o.op.removeprefix('aten.').split('.')[0]}: {o.reason}" for o in self.outside)
        outside = f", {len(self.outside)} ops outside XNNPACK ({'; '.join(why)})" if self.outside else ""
        return f"{self.delegate_calls} delegate call{'s' if self.delegate_calls != 1 else ''}{outside}"


def _is_delegate_call(node: torch.fx.Node) -> bool:
    return getattr(node.target, "__name__", "") == _DELEGATE_CALL


def _makes_tensor(node: torch.fx.Node) -> bool:
    val = node.meta.get("val")
    if isinstance(val, list | tuple):
        return any(isinstance(v, torch.Tensor) for v in val)
    return isinstance(val, torch.Tensor)


def _op_name(node: torch.fx.Node) -> str:
    target = edge_target(node)
    return str(getattr(target, "_name", None) or getattr(target, "__name__", target)).replace("::", ".")


def partitioning(edge_program, reason_for: Callable[[torch.fx.Node], str | None]) -> Partitioning:
    """Delegate calls and outside ops of a lowered program.

    Args:
        edge_program: the ExportedProgram after `to_edge_transform_and_lower`.
        reason_for: the partitioner's reason for leaving a node out (`Rejections.reason_for`).
    """
    calls, outside = 0, []
    for node in edge_program.graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        if _is_delegate_call(node):
            calls += 1
        elif node.target is not operator.getitem and _makes_tensor(node):
            outside.append(OutsideOp(node.name, _op_name(node), reason_for(node) or NO_CONFIG))
    return Partitioning(calls, tuple(outside))
