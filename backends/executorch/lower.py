"""export_pte: a converted (or float) model to an ExecuTorch .pte, with per-layer placement.

    copy → our passes → torch.export (dynamic batch) → to_edge_transform_and_lower(XNNPACK)
         → [q/dq the partitioner left out → aten arithmetic, lower again]
         → [dynamic batch split the graph or left ops outside XNNPACK → lower with static shapes,
            keep whichever is partitioned better] → to_executorch → atomic write

Why the shape check: a dynamic batch never costs speed by itself, but XNNPACK rejects some ops
under it ("ceil mode is not supported for dynamic shapes" for ceil-mode max-pool, "dynamic
output sizes are not supported" for upsampling) and symbolic reshapes break its partitions
(shufflenet_v2 took 34 delegate calls instead of 15). Those programs ran slower than float.

The input GraphModule is never modified (passes run on a deep copy).
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.backends.xnnpack.utils.configs import get_transform_passes
from executorch.exir import EdgeProgramManager, to_edge_transform_and_lower
from torch.export import Dim, ExportedProgram
from torch.fx import GraphModule
from torch.fx.passes.infra.pass_base import PassBase

from backends.executorch.delegation import Partitioning, partitioning
from backends.executorch.passes import (
    DecomposeQuantOpsPass,
    PassManager,
    portable_passes,
    xnnpack_passes,
)
from backends.executorch.placement import leftover_qdq, place
from backends.executorch.rejections import collect_rejections
from backends.result import ExportResult
from pt2e_int8.atomic import check_file_target, write_bytes_atomic
from pt2e_int8.capture import as_input_tuple, export_model
from pt2e_int8.coverage_report import LayerRow, coverage
from pt2e_int8.errors import ConfigError, LoweringError, UserInputError
from pt2e_int8.model_state import require_exportable

Delegate = Literal["xnnpack", "portable"]
DELEGATES = ("xnnpack", "portable")
# dynamic_shapes values besides None (static) and a torch.export spec.
SHAPES = ("auto", "batch")
# Upper bound of a dynamic batch when none is given: activation memory is planned for it.
MAX_BATCH = 64


@dataclass
class Lowered:
    edge: EdgeProgramManager
    graph_module: GraphModule  # what was exported: provenance points into its graph
    rows: list[LayerRow]  # coverage of the model as given
    rejections: dict[str, str]  # graph node name -> partitioner's reason
    passes_fired: list[str]
    shapes: str = ""  # "dynamic batch 1..64" or "static batch 1"
    partitioning: Partitioning | None = None  # delegate calls and ops outside XNNPACK
    notes: list[str] = field(default_factory=list)  # choices made on the user's behalf (shapes)

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
            # ExecuTorch's XNNPACK transform passes: the no-op expand_copy to_edge gives every
            # 4-D matmul would otherwise cut the delegate at each attention matmul.
            edge = to_edge_transform_and_lower(ep, transform_passes=get_transform_passes(), partitioner=partitioner)
        except Exception as e:
            raise LoweringError(
                f"to_edge_transform_and_lower ({delegate}) failed: {type(e).__name__}: {e}"
            ) from e
    _warn_if_specialized(edge.exported_program(), dynamic_shapes)
    return edge, rejections


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


def _lower_runnable(gm: GraphModule, args: tuple, delegate: Delegate, dynamic_shapes, max_batch: int,
                    fired: list[str], program_hook=None):
    """Lower; q/dq the partitioner left outside become aten arithmetic (the pip runtime has no
    quantized_decomposed kernels, so the program would fail to load). Returns the edge program,
    the graph it came from, reasons by exported-graph node, and how the program is split."""
    edge, rejections = _lower(gm, args, delegate, dynamic_shapes, max_batch, program_hook)
    by_source = rejections.by_source(id(gm.graph))
    left = leftover_qdq(edge.exported_program(), id(gm.graph))
    if left:
        fix = PassManager([DecomposeQuantOpsPass(only=left)])
        gm = fix.run(gm).graph_module
        fired += fix.fired
        edge, rejections = _lower(gm, args, delegate, dynamic_shapes, max_batch, program_hook)
        by_source = {**rejections.by_source(id(gm.graph)), **by_source}
        still = leftover_qdq(edge.exported_program(), id(gm.graph))
        if still:
            raise LoweringError(
                "quantize/dequantize nodes remain outside the delegate after decomposition: "
                f"{sorted(still.values())}; the ExecuTorch runtime has no kernel for them."
            )
    return edge, gm, by_source, partitioning(edge.exported_program(), rejections.reason_for)


def _static_batch(args: tuple) -> int | None:
    tensors = [a for a in args if isinstance(a, torch.Tensor) and a.dim() > 0]
    return tensors[0].shape[0] if tensors else None


def lower_program(
    model: torch.nn.Module,
    example_inputs,
    *,
    delegate: Delegate = "xnnpack",
    dynamic_shapes="auto",
    max_batch: int | None = None,
    passes: Sequence[PassBase] | None = None,
    program_hook: Callable[[ExportedProgram], ExportedProgram] | None = None,
) -> Lowered:
    """Lower without writing: the edge program and what placement needs to read it.

    `passes` replaces the delegate's pass list (the artifact debugger lowers with a changed
    list); `program_hook` edits the exported program just before `to_edge_transform_and_lower`
    (the debugger adds its intermediate-output taps there).

    `dynamic_shapes="auto"` without `max_batch` is static shapes (see `_resolve_shapes`). With a
    `max_batch` it lowers with a dynamic batch and, when that leaves ops outside XNNPACK or splits
    the graph into several delegate calls, also with static shapes; the static program is kept
    when it is partitioned better (fewer ops outside XNNPACK, then fewer delegate calls), with a
    warning and a note in the result.
    """
    if delegate not in DELEGATES:
        raise UserInputError(f"delegate={delegate!r} is not one of {DELEGATES}: use 'xnnpack' for int8 "
                             "kernels or 'portable' for devices without XNNPACK.")
    if isinstance(dynamic_shapes, str) and dynamic_shapes not in SHAPES:
        raise UserInputError(f"dynamic_shapes={dynamic_shapes!r} is not one of {SHAPES}, None (static shapes) "
                             "or a torch.export dynamic_shapes spec.")
    require_exportable(model, "export_pte")
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
        raise ConfigError(f"max_batch={max_batch!r} must be an int >= 1: the largest batch the .pte accepts "
                          f"(or None: static shapes, or a dynamic batch up to {MAX_BATCH} with "
                          "dynamic_shapes='batch').")
    dynamic_shapes, max_batch = _resolve_shapes(dynamic_shapes, max_batch)
    args = as_input_tuple(example_inputs)
    export_shapes = "batch" if dynamic_shapes == "auto" else dynamic_shapes
    gm = _as_graph_module(model, args, export_shapes)
    rows = coverage(gm).layers  # before the passes: folding a weight-only dq hides its scheme
    if passes is None:
        passes = xnnpack_passes() if delegate == "xnnpack" else portable_passes()
    manager = PassManager(passes)
    gm = manager.run(gm).graph_module
    fired = list(manager.fired)
    first = "batch" if dynamic_shapes == "auto" else dynamic_shapes
    trial = copy.deepcopy(gm) if dynamic_shapes == "auto" and delegate == "xnnpack" else gm
    edge, lowered_gm, by_source, split = _lower_runnable(trial, args, delegate, first, max_batch, fired, program_hook)
    shapes, notes = _describe_shapes(edge.exported_program(), max_batch), []
    if dynamic_shapes == "auto" and delegate == "xnnpack" and not split.clean:
        fired_static: list[str] = []
        static = _lower_runnable(gm, args, delegate, None, max_batch, fired_static, program_hook)
        static_split = static[3]
        if static_split.cost() < split.cost():
            note = (f"a dynamic batch gave {split.describe()}; static shapes give {static_split.describe()}, "
                    f"so the program takes exactly batch {_static_batch(args)} (pass dynamic_shapes='batch' "
                    "to keep a dynamic batch at that cost)")
            warnings.warn(f"export_pte: {note}.", stacklevel=2)
            notes.append(note)
            edge, lowered_gm, by_source, _ = static
            split, fired = static_split, fired + [f for f in fired_static if f not in fired]
            shapes = _describe_shapes(edge.exported_program(), max_batch)
    return Lowered(edge, lowered_gm, rows, by_source, fired, shapes=shapes, partitioning=split, notes=notes)


def _resolve_shapes(dynamic_shapes, max_batch: int | None):
    """"auto" with no `max_batch` means static shapes: XNNPACK re-plans a dynamic-shape runtime on
    every call, which cost 1.5-5% per inference on CNNs with the same partitioning
    (bench/arch.md), and the stock ExecuTorch flow is static too. A `max_batch` asks for a range."""
    if dynamic_shapes == "auto" and max_batch is None:
        return None, MAX_BATCH
    return dynamic_shapes, max_batch if max_batch is not None else MAX_BATCH


def _describe_shapes(ep, max_batch: int) -> str:
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in ep.graph_signature.user_inputs:
            val = node.meta.get("val")
            if isinstance(val, torch.Tensor) and val.dim():
                size = val.shape[0]
                return f"static batch {size}" if isinstance(size, int) else f"dynamic batch 1..{max_batch}"
    return "static"


def export_pte(
    model: torch.nn.Module,
    example_inputs,
    path: str | os.PathLike,
    *,
    delegate: Delegate = "xnnpack",
    dynamic_shapes="auto",
    max_batch: int | None = None,
) -> ExportResult:
    """Write an ExecuTorch .pte and say where each layer runs.

    Args:
        model: a converted GraphModule from `pt2e_int8.quantize` / `convert`, or a float module.
        example_inputs: a tensor or tuple of tensors, batch first.
        path: the .pte to write (atomically).
        delegate: "xnnpack" (int8 kernels) or "portable" (no delegate; runs anywhere).
        dynamic_shapes: "auto" (default: static shapes, exactly the example inputs' batch; with a
            `max_batch`, a dynamic batch unless it costs XNNPACK coverage or delegate calls, then
            static shapes with a warning), "batch" (any batch from 1 to max_batch, whatever it
            costs), None (static), or a torch.export spec. Static is the default because a
            dynamic batch costs XNNPACK 1.5-5% per call even when it partitions alike.
        max_batch: largest batch the program accepts (the runtime plans memory for it); giving
            one asks for a dynamic batch. Default None: static, or 64 with "batch".

    Returns:
        ExportResult with `placement` / `detail` per coverage row, `shapes` (what the program
        accepts), `delegate_calls`, `outside_delegate` (ops on portable kernels, with the
        partitioner's reasons) and `notes` (choices made on your behalf).

    Example:
        res = export_pte(qm, (x,), "out/model.pte")
        res.placement  # {"fc1": "int8", ...}
    """
    check_file_target(path, "export_pte")  # before minutes of lowering
    lowered = lower_program(model, example_inputs, delegate=delegate, dynamic_shapes=dynamic_shapes,
                            max_batch=max_batch)
    placement, detail = lowered.placement(delegated=delegate == "xnnpack")
    try:
        program = lowered.edge.to_executorch()
    except Exception as e:
        raise LoweringError(f"to_executorch failed: {type(e).__name__}: {e}") from e
    out = write_bytes_atomic(path, program.buffer)
    split = lowered.partitioning
    return ExportResult(path=Path(out), format="pte", placement=placement, detail=detail, shapes=lowered.shapes,
                        delegate_calls=split.delegate_calls if split else None,
                        outside_delegate=[o.to_dict() for o in split.outside] if split else [],
                        notes=list(lowered.notes))
