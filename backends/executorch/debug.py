"""Per-layer outputs of the .pte, read from the ExecuTorch runtime, against the PyTorch reference.

    converted model → tag each layer's output node → our passes (or the list under test)
      → torch.export → ExecuTorch intermediate-output tap (every tagged node becomes an extra
        program output, also inside the XNNPACK delegate) → to_edge_transform_and_lower
      → strip the taps → to_executorch → run in the ExecuTorch runtime
      → compare each tapped output with the reference, layer by layer: the first one off by
        more than a couple of output steps is where lowering went wrong

Why the tap and not ETDump: the pip runtime (executorch 1.5.1) writes an ETDump and a debug
buffer (`Runtime.load_program(..., enable_etdump=True, debug_buffer_size=N)`), but inside the
XNNPACK delegate it records only per-kernel timings, with `debug_handles=None` and empty
`debug_data`; the buffer holds the delegate call's inputs and outputs only, so the Inspector
cannot attribute a value to any op inside the delegate (and `calculate_numeric_gap` needs
representative inputs in the ETRecord). The tap turns each layer output into a delegate output
instead; the program's own outputs are unchanged (checked against the user's .pte when given).

The reference is XNNPACK-faithful by default (`reference.xnnpack_reference`: per-row dynamic
int8), so a correct dynamic layer does not show up as a divergence.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from executorch.devtools.intermediate_output_tap import (
    FULL_TENSOR,
    strip_taps_,
    tap_intermediate_outputs_,
)
from torch.fx import GraphModule
from torch.fx.passes.infra.pass_base import PassBase

from backends.executorch.lower import MAX_BATCH, Delegate, lower_program
from backends.executorch.reference import xnnpack_reference
from backends.executorch.runtime import load_pte
from pt2e_int8.capture import as_input_tuple
from pt2e_int8.coverage_report import coverage
from pt2e_int8.debug.artifact import (
    MAX_STEPS,
    ArtifactReport,
    compare_layers,
    reference_values,
    tap_points,
)
from pt2e_int8.errors import UserInputError
from pt2e_int8.qdq import is_dequantize

# node.meta["custom"] key carrying the coverage row a tapped node belongs to (survives re-export).
TAP_KEY = "pt2e_int8_tap"


def _tagged(node) -> str | None:
    return (node.meta.get("custom") or {}).get(TAP_KEY)


def debug_pte(
    model: GraphModule,
    inputs: Iterable,
    *,
    passes: Sequence[PassBase] | None = None,
    reference: Callable[[GraphModule], torch.nn.Module] | None = xnnpack_reference,
    delegate: Delegate = "xnnpack",
    max_batch: int = MAX_BATCH,
    pte: str | Path | None = None,
    max_steps: float = MAX_STEPS,
) -> ArtifactReport:
    """Lower `model` with taps on every layer output, run it, and compare with the reference.

    Args:
        model: the converted GraphModule.
        inputs: batches (tensor or tuple of tensors each).
        passes: the lowering passes (default: the delegate's, as export_pte uses).
        reference: turns `model` into the reference to compare with (None: `model` itself).
        delegate / max_batch: as for export_pte.
        pte: the .pte exported from `model`, to confirm the tapped program computes the same outputs.
        max_steps: a layer off by more than this many output steps has diverged.

    Example:
        rep = debug_pte(qm, [(x,)])
        rep.first_divergence   # None, or the row where the .pte leaves the reference
    """
    batches = [as_input_tuple(b) for b in inputs]
    if not batches:
        raise UserInputError("debug_pte needs at least one input batch.")
    rows = coverage(model).layers
    outputs = tap_points(model, rows)
    points = {row: node.name for row, node in outputs.items()}
    # A static output is tapped at its quantize (the int8 tensor) and dequantized here: a tap on
    # the dequantize inside an XNNPACK delegate comes back as zeros (the delegate never converts
    # that tensor back to float), while the int8 tensor is a real delegate value.
    qparams = {row: (float(n.args[1]), int(n.args[2])) for row, n in outputs.items()
               if is_dequantize(n) and isinstance(n.args[1], int | float) and isinstance(n.args[0], torch.fx.Node)}
    tagged = copy.deepcopy(model)
    by_name = {n.name: n for n in tagged.graph.nodes}
    for row, node_name in points.items():
        node = by_name[node_name]
        target = node.args[0] if row in qparams else node
        target.meta.setdefault("custom", {})[TAP_KEY] = row
    order: list[tuple[int, str]] = []

    def add_taps(ep):
        rows_of = {n.name: _tagged(n) for n in ep.graph.nodes if _tagged(n)}
        ep, specs = tap_intermediate_outputs_(ep, [(lambda n: _tagged(n) is not None, FULL_TENSOR)],
                                              error_on_empty=False)
        order[:] = [(s.output_index, rows_of[s.node_name]) for s in specs if s.node_name in rows_of]
        return ep

    lowered = lower_program(tagged, batches[0], delegate=delegate, max_batch=max_batch, passes=passes,
                            program_hook=add_taps)
    strip_taps_(lowered.edge)
    program = lowered.edge.to_executorch()
    first_tap = min((i for i, _ in order), default=None)
    notes = [f"{len(order)} of {len(points)} layer outputs tapped through the ExecuTorch runtime"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tapped.pte"
        path.write_bytes(program.buffer)
        runtime = load_pte(path)
        results = [runtime.run(list(b)) for b in batches]
    def as_float(row: str, value: torch.Tensor) -> torch.Tensor:
        if row in qparams and not value.is_floating_point():
            scale, zero = qparams[row]
            return (value.to(torch.float32) - zero) * scale
        return value

    taps = [{row: as_float(row, outs[i]) for i, row in order} for outs in results]
    if pte is not None:
        theirs = load_pte(pte)
        diffs = []
        for b, outs in zip(batches, results, strict=True):
            own = outs[:first_tap] if first_tap is not None else outs
            diffs += [(a.float() - c.float()).abs().max().item() for a, c in zip(own, theirs.run(list(b)), strict=True)]
        notes.append(f"the tapped program's outputs vs {Path(pte).name}: max |diff| {max(diffs, default=0.0):.3g}")
    ref_model = reference(model) if reference is not None else model
    references = [reference_values(ref_model, points, b) for b in batches]
    name = f"{'xnnpack_reference(model)' if reference is xnnpack_reference else 'the converted model'}"
    return compare_layers(f".pte ({delegate})", rows, model, taps, references, reference_name=name,
                          max_steps=max_steps, notes=notes)
