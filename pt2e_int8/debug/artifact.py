"""Compare a runtime's per-layer outputs with the PyTorch reference and pin the first divergence.

The backends tap each layer's output inside the artifact (ExecuTorch's intermediate-output tap,
extra ONNX graph outputs) at the point `anchors.layer_output` names in the converted graph; this
module runs the reference, compares layer by layer in graph order, and names the first layer
whose error exceeds the tolerance: downstream layers inherit its error, so the first one is
where lowering went wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch.fx import GraphModule, Interpreter, Node

from pt2e_int8.coverage_report import LayerRow
from pt2e_int8.debug.anchors import layer_output, output_step
from pt2e_int8.debug.numeric import RunningError, json_number
from pt2e_int8.text_table import text_table

# Within this many output steps a kernel is right (rounding differs by at most a step or so).
MAX_STEPS = 2.0
# For a float output (no step), an SQNR below this counts as a divergence.
MIN_SQNR_DB = 35.0


def tap_points(gm: GraphModule, rows: Sequence[LayerRow]) -> dict[str, Node]:
    """Coverage row name -> the converted-graph node holding its output."""
    nodes = {n.name: n for n in gm.graph.nodes}
    return {r.name: layer_output(nodes[r.node]) for r in rows if r.node in nodes}


class _Capture(Interpreter):
    def __init__(self, gm: GraphModule, wanted: set[str]) -> None:
        super().__init__(gm)
        self.wanted, self.values = wanted, {}

    def run_node(self, n: Node):
        value = super().run_node(n)
        if n.name in self.wanted and isinstance(value, torch.Tensor):
            self.values[n.name] = value.detach().clone()
        return value


def reference_values(gm: torch.nn.Module, points: Mapping[str, str], batch: tuple) -> dict[str, torch.Tensor]:
    """Row name -> reference value at its tap point (node name in `gm`) for one batch."""
    capture = _Capture(gm, set(points.values()))
    with torch.no_grad():
        capture.run(*batch)
    return {row: capture.values[node] for row, node in points.items() if node in capture.values}


def fit(tap: torch.Tensor, ref: torch.Tensor) -> torch.Tensor | None:
    """A tapped tensor shaped like the reference, or None.

    A runtime may hold the value flattened (the ONNX exporter runs a 3-D linear as a 2-D Gemm
    between reshapes): same element count, same row-major order. Or at a planned upper-bound
    batch: the leading rows hold it. A wrong guess cannot hide an error, only report one.
    """
    tap = torch.as_tensor(tap).detach().float()
    if tap.shape == ref.shape:
        return tap
    if tap.numel() == ref.numel():
        return tap.reshape(ref.shape)
    if tap.dim() == ref.dim() and tap.shape[1:] == ref.shape[1:] and tap.shape[0] >= ref.shape[0]:
        return tap[: ref.shape[0]]
    return None


@dataclass(frozen=True)
class ArtifactRow:
    name: str
    op: str
    scheme: str | None
    step: float | None
    max_error: float | None  # vs the reference at this layer's output
    error_steps: float | None
    sqnr: float | None
    diverged: bool
    note: str = ""


@dataclass
class ArtifactReport:
    artifact: str
    rows: list[ArtifactRow]
    batches: int
    reference: str  # what the artifact was compared with
    notes: list[str] = field(default_factory=list)

    @property
    def first_divergence(self) -> ArtifactRow | None:
        return next((r for r in self.rows if r.diverged), None)

    def to_dict(self) -> dict:
        rows = [{**asdict(r), "sqnr": json_number(r.sqnr)} for r in self.rows]
        first = self.first_divergence
        return {"artifact": self.artifact, "reference": self.reference, "batches": self.batches,
                "first_divergence": first.name if first else None, "layers": rows, "notes": self.notes}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        header = ("layer", "op", "scheme", "max err", "err steps", "SQNR dB", "")
        body = []
        for r in self.rows:
            db = "n/a" if r.sqnr is None else ("exact" if math.isinf(r.sqnr) else f"{r.sqnr:.1f}")
            body.append((r.name, r.op, r.scheme or "float",
                         "n/a" if r.max_error is None else f"{r.max_error:.3g}",
                         "" if r.error_steps is None else f"{r.error_steps:.2f}", db,
                         "<- first divergence" if r is self.first_divergence else r.note))
        first = self.first_divergence
        verdict = (f"first divergence: {first.name} ({first.op})" if first
                   else f"no layer off by more than {MAX_STEPS:g} steps (or below {MIN_SQNR_DB:g} dB)")
        return f"{self.artifact} vs {self.reference}\n{text_table(header, body, right=(3, 4, 5))}\n{verdict}"


def compare_layers(
    artifact: str,
    rows: Sequence[LayerRow],
    gm: GraphModule,
    taps: Sequence[Mapping[str, torch.Tensor]],
    references: Sequence[Mapping[str, torch.Tensor]],
    *,
    reference_name: str,
    max_steps: float = MAX_STEPS,
    min_sqnr: float = MIN_SQNR_DB,
    notes: Sequence[str] = (),
) -> ArtifactReport:
    """Per coverage row (graph order): the artifact's tapped outputs against the reference's.

    Args:
        taps / references: per batch, row name -> tensor.
    """
    nodes = {n.name: n for n in gm.graph.nodes}
    out = []
    for row in rows:
        err, note = RunningError(), ""
        for tap_batch, ref_batch in zip(taps, references, strict=True):
            ref, tap = ref_batch.get(row.name), tap_batch.get(row.name)
            if ref is None or tap is None:
                continue
            fitted = fit(tap, ref.float())
            if fitted is None:
                note = f"shape {tuple(tap.shape)} vs reference {tuple(ref.shape)}"
                continue
            err.add(ref.float(), fitted)
        node = nodes.get(row.node)
        step = output_step(node) if node is not None else None
        steps = err.max_abs / step if err.seen and step else None
        sqnr = err.sqnr
        diverged = err.seen and ((steps is not None and steps > max_steps)
                                 or (steps is None and sqnr is not None and sqnr < min_sqnr))
        if not err.seen and not note:
            note = "not tapped (no layer node in the artifact)"
        out.append(ArtifactRow(row.name, row.op, row.scheme if row.quantized else None, step,
                               err.max_abs if err.seen else None, steps, sqnr, bool(diverged), note))
    return ArtifactReport(artifact, out, len(taps), reference_name, list(notes))
