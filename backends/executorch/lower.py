"""export_pte: a converted (or float) model to an ExecuTorch .pte, with per-layer placement.

    copy → our passes → torch.export (dynamic batch) → to_edge_transform_and_lower(XNNPACK)
         → [q/dq the partitioner left out → aten arithmetic, lower again] → to_executorch
         → atomic write

The input GraphModule is never modified (passes run on a deep copy).
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import EdgeProgramManager, to_edge_transform_and_lower
from torch.export import Dim, ExportedProgram
from torch.fx import GraphModule
from torch.fx.passes.infra.pass_base import PassBase

from backends.executorch.passes import (
    DecomposeQuantOpsPass,
    PassManager,
    portable_passes,
    xnnpack_passes,
)
from backends.executorch.placement import leftover_qdq, place
from backends.executorch.rejections import collect_rejections
from backends.result import ExportResult
from pt2e_int8.atomic import write_bytes_atomic
from pt2e_int8.capture import as_input_tuple, export_model
from pt2e_int8.coverage_report import LayerRow, coverage
from pt2e_int8.errors import LoweringError, UserInputError

Delegate = Literal["xnnpack", "portable"]
DELEGATES = ("xnnpack", "portable")
# Upper bound of the dynamic batch: activation memory is planned for it.
MAX_BATCH = 64


@dataclass
class Lowered:
    edge: EdgeProgramManager
    graph_module: GraphModule  # what was exported: provenance points into its graph
    rows: list[LayerRow]  # coverage of the model as given
    rejections: dict[str, str]  # graph node name -> partitioner's reason
    passes_fired: list[str]

    def placement(self, *, delegated: bool = True):
        return place(self.rows, self.edge.exported_program(), id(self.graph_module.graph),
                     self.rejections, delegated=delegated)


def _as_graph_module(model: torch.nn.Module, args: tuple, dynamic_shapes) -> GraphModule:
    """A private GraphModule to run passes on: a copy of a converted one, or the float export."""
    if isinstance(model, GraphModule):
        return copy.deepcopy(model)
    model.eval()
    return export_model(model, args, dynamic_shapes).module()


def _bounded_batch(args: tuple, max_batch: int) -> tuple[tuple, tuple]:
    """Trace args at the batch upper bound, and a batch spec bounded by it.

    Tracing at the bound matters: ExecuTorch 1.5.1 sizes some XNNPACK conv buffers from
    the trace's size hint rather than the Dim's max (traced at batch 2, a conv .pte
    rejected batch 16 and up), and a size-1 trace would specialize the batch anyway.
    """
    tensors = [a for a in args if isinstance(a, torch.Tensor) and a.dim() > 0]
    bound = max([max_batch, *(t.shape[0] for t in tensors)])
    batch = Dim("batch", min=1, max=bound)

    def at_bound(a):
        if not (isinstance(a, torch.Tensor) and a.dim() > 0):
            return a
        reps = -(-bound // a.shape[0])
        return a.repeat(reps, *[1] * (a.dim() - 1))[:bound]

    spec = tuple({0: batch} if isinstance(a, torch.Tensor) and a.dim() > 0 else None for a in args)
    return tuple(at_bound(a) for a in args), spec


def _export(gm: GraphModule, args: tuple, dynamic_shapes, max_batch: int):
    """ExecuTorch plans memory for a dimension's upper bound, so the batch gets one."""
    if dynamic_shapes == "batch":
        trace_args, spec = _bounded_batch(args, max_batch)
        try:
            return torch.export.export(gm, trace_args, dynamic_shapes=spec, strict=False)
        except Exception:  # noqa: BLE001  (the core's fallbacks below say what was lost)
            pass
    return export_model(gm, args, dynamic_shapes, check_inputs=False)


def _lower(gm: GraphModule, args: tuple, delegate: Delegate, dynamic_shapes, max_batch: int, program_hook=None):
    ep = _export(gm, args, dynamic_shapes, max_batch)
    if program_hook is not None:
        ep = program_hook(ep)
    partitioner = [XnnpackPartitioner()] if delegate == "xnnpack" else []
    with collect_rejections() as rejections:
        try:
            edge = to_edge_transform_and_lower(ep, partitioner=partitioner)
        except Exception as e:
            raise LoweringError(
                f"to_edge_transform_and_lower ({delegate}) failed: {type(e).__name__}: {e}"
            ) from e
    _warn_if_specialized(edge.exported_program(), dynamic_shapes)
    return edge, rejections.by_source(id(gm.graph))


def _warn_if_specialized(ep, dynamic_shapes) -> None:
    if dynamic_shapes != "batch":
        return
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in ep.graph_signature.user_inputs:
            val = node.meta.get("val")
            if isinstance(val, torch.Tensor) and val.dim() and isinstance(val.shape[0], int):
                warnings.warn(
                    f"the lowered program has a fixed batch of {val.shape[0]} (input {node.name}): "
                    "an op on the way specialized the batch dimension; run it at that batch only.",
                    stacklevel=3,
                )
                return


def lower_program(
    model: torch.nn.Module,
    example_inputs,
    *,
    delegate: Delegate = "xnnpack",
    dynamic_shapes="batch",
    max_batch: int = MAX_BATCH,
    passes: Sequence[PassBase] | None = None,
    program_hook: Callable[[ExportedProgram], ExportedProgram] | None = None,
) -> Lowered:
    """Lower without writing: the edge program and what placement needs to read it.

    `passes` replaces the delegate's pass list (the artifact debugger lowers with a changed
    list); `program_hook` edits the exported program just before `to_edge_transform_and_lower`
    (the debugger adds its intermediate-output taps there).
    """
    if delegate not in DELEGATES:
        raise UserInputError(f"delegate={delegate!r} is not one of {DELEGATES}: use 'xnnpack' for int8 "
                             "kernels or 'portable' for devices without XNNPACK.")
    args = as_input_tuple(example_inputs)
    gm = _as_graph_module(model, args, dynamic_shapes)
    rows = coverage(gm).layers  # before the passes: folding a weight-only dq hides its scheme
    if passes is None:
        passes = xnnpack_passes() if delegate == "xnnpack" else portable_passes()
    manager = PassManager(passes)
    gm = manager.run(gm).graph_module
    edge, rejections = _lower(gm, args, delegate, dynamic_shapes, max_batch, program_hook)
    fired = list(manager.fired)
    left = leftover_qdq(edge.exported_program(), id(gm.graph))
    if left:
        # The pip runtime has no quantized_decomposed kernels: a q/dq outside a delegate
        # would make the program fail to load. Run those as aten arithmetic instead.
        fix = PassManager([DecomposeQuantOpsPass(only=left)])
        gm = fix.run(gm).graph_module
        fired += fix.fired
        edge, more = _lower(gm, args, delegate, dynamic_shapes, max_batch, program_hook)
        rejections = {**more, **rejections}
        still = leftover_qdq(edge.exported_program(), id(gm.graph))
        if still:
            raise LoweringError(
                "quantize/dequantize nodes remain outside the delegate after decomposition: "
                f"{sorted(still.values())}; the ExecuTorch runtime has no kernel for them."
            )
    return Lowered(edge, gm, rows, rejections, fired)


def export_pte(
    model: torch.nn.Module,
    example_inputs,
    path: str | os.PathLike,
    *,
    delegate: Delegate = "xnnpack",
    dynamic_shapes="batch",
    max_batch: int = MAX_BATCH,
) -> ExportResult:
    """Write an ExecuTorch .pte and say where each layer runs.

    Args:
        model: a converted GraphModule from `pt2e_int8.quantize` / `convert`, or a float module.
        example_inputs: a tensor or tuple of tensors, batch first.
        path: the .pte to write (atomically).
        delegate: "xnnpack" (int8 kernels) or "portable" (no delegate; runs anywhere).
        dynamic_shapes: "batch" (any batch from 1 to max_batch from one export), None, or a
            torch.export spec.
        max_batch: largest batch the program accepts; the runtime plans memory for it.

    Returns:
        ExportResult with `placement` / `detail` per coverage row.

    Example:
        res = export_pte(qm, (x,), "out/model.pte")
        res.placement  # {"fc1": "int8", ...}
    """
    lowered = lower_program(model, example_inputs, delegate=delegate, dynamic_shapes=dynamic_shapes,
                            max_batch=max_batch)
    placement, detail = lowered.placement(delegated=delegate == "xnnpack")
    try:
        program = lowered.edge.to_executorch()
    except Exception as e:
        raise LoweringError(f"to_executorch failed: {type(e).__name__}: {e}") from e
    out = write_bytes_atomic(path, program.buffer)
    return ExportResult(path=Path(out), format="pte", placement=placement, detail=detail)
